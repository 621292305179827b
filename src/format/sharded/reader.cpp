// ShardedReader: the index checked up front, each shard opened on first use and checked against
// the index, reads fanned out over a few threads.
#include <algorithm>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "ckptio/error.h"
#include "ckptio/sharded.h"
#if CKPTIO_HAVE_TORCHFILE
#include "ckptio/torch_pickle.h"
#endif
#include "ckptio/parallel_reader.h"
#include "core/executor.h"

namespace ckptio {
namespace fs = std::filesystem;

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool is_within(const fs::path& root, const fs::path& p) {
  auto r = root.begin();
  auto q = p.begin();
  for (; r != root.end(); ++r, ++q) {
    if (r->empty() && std::next(r) == root.end()) break;  // trailing slash
    if (q == p.end() || *r != *q) return false;
  }
  return true;
}

// Finds the index of a folder: model.safetensors.index.json, else the only *.safetensors index,
// else the only *.index.json.
std::string find_index_name(io::Env& env, const fs::path& dir) {
  std::vector<std::string> st, any;
  for (const auto& name : env.list_dir(dir)) {
    if (io::is_temp_name(name)) continue;
    if (ends_with(name, ".safetensors.index.json")) st.push_back(name);
    if (ends_with(name, ".index.json")) any.push_back(name);
  }
  if (std::find(st.begin(), st.end(), "model.safetensors.index.json") != st.end()) {
    return "model.safetensors.index.json";
  }
  const auto& pick = st.empty() ? any : st;
  if (pick.size() == 1) return pick.front();
  if (pick.empty()) {
    throw Error(ErrorCode::NotFound, "no *.index.json in folder '" + dir.string() + "'");
  }
  std::string names;
  for (const auto& n : pick) names += (names.empty() ? "" : ", ") + n;
  throw Error(ErrorCode::Corrupt,
              "folder '" + dir.string() + "' holds several index files (" + names + "); pass one");
}

struct OpenedShard {
  std::optional<SafetensorsReader> safetensors;
  std::map<std::string, Tensor> torch_tensors;
  uint64_t file_size = 0;
};

}  // namespace

struct ShardedReader::Impl {
  ShardIndex index;
  ShardedReadOptions options;
  io::Env* env = nullptr;
  std::unordered_map<std::string, size_t> position;  // name -> index into index.weight_map
  std::vector<std::vector<std::string>> expected;    // per shard, the names the index assigns

  struct Slot {
    std::mutex mutex;
    std::shared_ptr<const OpenedShard> opened;
  };
  std::vector<std::unique_ptr<Slot>> slots;

  std::string source() const { return "index '" + (index.dir / index.index_name).string() + "'"; }
  fs::path shard_path(size_t s) const { return index.dir / index.shard_files.at(s); }

  void check_shard_files() {
    const fs::path root_input = options.allowed_root.empty() ? index.dir : options.allowed_root;
    std::optional<fs::path> root;  // resolved only when a symlink needs it
    for (size_t s = 0; s < index.shard_files.size(); ++s) {
      const fs::path p = shard_path(s);
      // Walk the components below the folder: any symlink must resolve inside the root.
      fs::path walk = index.dir;
      bool linked = false;
      io::FileInfo info;
      for (const auto& part : fs::path(index.shard_files[s])) {
        walk /= part;
        info = env->stat(walk);
        if (!info.exists) {
          throw Error(ErrorCode::NotFound, source() + " names shard '" + index.shard_files[s] +
                                               "', which does not exist");
        }
        linked = linked || info.is_symlink;
      }
      if (linked) {
        if (!root) root = env->stat(root_input).exists ? env->real_path(root_input)
                                                       : fs::absolute(root_input).lexically_normal();
        fs::path target;
        try {
          target = env->real_path(p);
        } catch (const Error&) {
          throw Error(ErrorCode::NotFound, source() + ": shard '" + index.shard_files[s] +
                                               "' is a dangling symlink");
        }
        if (!is_within(*root, target)) {
          throw Error(ErrorCode::Unsafe, source() + ": shard '" + index.shard_files[s] +
                                             "' is a symlink to '" + target.string() +
                                             "', outside '" + root->string() + "'");
        }
        if (!env->stat(target).is_regular_file) {  // target has no links left to follow
          throw Error(ErrorCode::Corrupt, source() + ": shard '" + index.shard_files[s] +
                                              "' is not a regular file");
        }
      } else if (info.is_directory) {
        throw Error(ErrorCode::Corrupt,
                    source() + ": shard '" + index.shard_files[s] + "' is a directory");
      }
    }
  }

  // Every name the shard holds must be one the index assigns to it, and the reverse.
  void check_contents(size_t s, const std::vector<std::string>& held) const {
    const std::string shard = "'" + index.shard_files[s] + "'";
    std::vector<std::string> problems;
    std::unordered_map<std::string_view, bool> want;
    for (const auto& n : expected[s]) want[n] = false;
    for (const auto& n : held) {
      auto it = want.find(n);
      if (it != want.end()) {
        it->second = true;
        continue;
      }
      auto pos = position.find(n);
      if (pos != position.end()) {
        const auto& other = index.shard_files[index.weight_map[pos->second].second];
        problems.push_back("tensor '" + n + "' is in shard " + shard +
                           " but the index assigns it to '" + other + "' (a tensor in two shards)");
      } else {
        problems.push_back("shard " + shard + " holds tensor '" + n +
                           "', which the index does not list");
      }
    }
    for (const auto& n : expected[s]) {
      if (!want[n]) {
        problems.push_back("the index assigns tensor '" + n + "' to shard " + shard +
                           ", which does not hold it");
      }
    }
    if (problems.empty()) return;
    std::string msg = source() + " disagrees with shard " + shard + ": ";
    for (size_t i = 0; i < problems.size() && i < 10; ++i) msg += (i ? "; " : "") + problems[i];
    if (problems.size() > 10) msg += "; and " + std::to_string(problems.size() - 10) + " more";
    throw Error(ErrorCode::Corrupt, msg);
  }

  std::shared_ptr<const OpenedShard> shard(size_t s) const {
    Slot& slot = *slots.at(s);
    std::lock_guard lock(slot.mutex);
    if (slot.opened) return slot.opened;
    auto opened = std::make_shared<OpenedShard>();
    const fs::path path = shard_path(s);
    std::vector<std::string> held;
    try {
      if (index.flavour == IndexFlavour::TorchBin) {
#if CKPTIO_HAVE_TORCHFILE
        pt::TorchLoadOptions to;
        to.env = env;
        opened->torch_tensors = pt::load_torch_state_dict(path, "", to);
#else
        throw Error(ErrorCode::Unsupported, "'" + path.string() +
                                                "': this build has no torch pickle reader");
#endif
        for (const auto& [n, t] : opened->torch_tensors) held.push_back(n);
        opened->file_size = env->stat(path).size;
      } else {
        opened->safetensors = SafetensorsReader::open(path, {.mode = options.mode, .env = env});
        for (const auto& t : opened->safetensors->tensors()) held.push_back(t.name);
        opened->file_size = opened->safetensors->file_size();
      }
    } catch (const Error& e) {
      throw e.annotate(source());
    }
    check_contents(s, held);
    slot.opened = opened;
    return opened;
  }

  size_t shard_of(std::string_view name) const {
    auto it = position.find(std::string(name));
    if (it == position.end()) {
      throw Error(ErrorCode::NotFound, source() + " has no tensor '" + std::string(name) + "'");
    }
    return index.weight_map[it->second].second;
  }

  ShardedTensorInfo info_in(const OpenedShard& o, size_t s, std::string_view name) const {
    ShardedTensorInfo info;
    info.name = std::string(name);
    info.shard = s;
    if (o.safetensors) {
      const TensorInfo& t = o.safetensors->info(name);
      info.dtype = t.dtype;
      info.shape = t.shape;
      info.nbytes = t.nbytes();
    } else {
      const Tensor& t = o.torch_tensors.at(info.name);
      info.dtype = t.dtype();
      info.shape = t.shape();
      info.nbytes = t.nbytes();
    }
    return info;
  }
};

ShardedReader::ShardedReader(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

ShardedReader ShardedReader::open(const fs::path& path, const ShardedReadOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->options = options;
  impl->env = options.env ? options.env : &io::Env::posix();
  io::Env& env = *impl->env;
  const io::FileInfo info = env.stat(path);
  if (!info.exists) throw Error(ErrorCode::NotFound, "'" + path.string() + "' does not exist");
  fs::path dir = path;
  std::string index_name;
  if (info.is_directory || (info.is_symlink && env.stat_target(path).is_directory)) {
    index_name = find_index_name(env, dir);
  } else {
    dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    index_name = path.filename().string();
  }
  const std::string text = io::read_small_file(env, dir / index_name);
  impl->index = parse_shard_index(text, dir, index_name);
  impl->expected.resize(impl->index.shard_files.size());
  for (size_t i = 0; i < impl->index.weight_map.size(); ++i) {
    const auto& [name, shard] = impl->index.weight_map[i];
    impl->position.emplace(name, i);
    impl->expected[shard].push_back(name);
  }
  for (size_t s = 0; s < impl->index.shard_files.size(); ++s) {
    impl->slots.push_back(std::make_unique<Impl::Slot>());
  }
  impl->check_shard_files();
  return ShardedReader(std::move(impl));
}

const ShardIndex& ShardedReader::index() const { return impl_->index; }
fs::path ShardedReader::shard_path(size_t shard) const { return impl_->shard_path(shard); }
size_t ShardedReader::tensor_count() const { return impl_->index.weight_map.size(); }
bool ShardedReader::contains(std::string_view name) const {
  return impl_->position.count(std::string(name)) != 0;
}

std::vector<ShardedTensorInfo> ShardedReader::tensors() const {
  const size_t n = impl_->index.shard_files.size();
  detail::parallel_for(n, detail::thread_count(impl_->options.threads, n),
                       [&](size_t s) { impl_->shard(s); });
  std::vector<ShardedTensorInfo> out;
  out.reserve(impl_->index.weight_map.size());
  for (const auto& [name, s] : impl_->index.weight_map) {
    out.push_back(impl_->info_in(*impl_->shard(s), s, name));
  }
  return out;
}

ShardedTensorInfo ShardedReader::info(std::string_view name) const {
  const size_t s = impl_->shard_of(name);
  return impl_->info_in(*impl_->shard(s), s, name);
}

Tensor ShardedReader::tensor(std::string_view name) const {
  const size_t s = impl_->shard_of(name);
  const auto opened = impl_->shard(s);
  if (opened->safetensors) return opened->safetensors->tensor(name);
  return opened->torch_tensors.at(std::string(name));
}

void ShardedReader::read_into(std::string_view name, std::span<std::byte> dst) const {
  const ShardedTensorInfo i = info(name);
  ReadRequest r{i.name, i.dtype, dst};
  read_into_many(std::span(&r, 1), 1);
}

uint64_t ShardedReader::read_into_many(std::span<const ReadRequest> requests, int threads) const {
  std::vector<io::ReadRange> ranges;
  ranges.reserve(requests.size());
  std::vector<std::shared_ptr<const OpenedShard>> keep;
  for (const auto& r : requests) {
    const size_t s = impl_->shard_of(r.name);
    auto opened = impl_->shard(s);
    const ShardedTensorInfo i = impl_->info_in(*opened, s, r.name);
    const uint64_t want = tensor_nbytes(r.dst_dtype, i.shape);
    if (r.dst.size() != want) {
      throw Error(ErrorCode::InvalidArgument,
                  "destination for tensor '" + r.name + "' " + std::string(dtype_name(r.dst_dtype)) +
                      " " + shape_to_string(i.shape) + " must be " + std::to_string(want) +
                      " bytes, got " + std::to_string(r.dst.size()));
    }
    if (opened->safetensors) {
      const auto& st = *opened->safetensors;
      const TensorInfo& t = st.info(r.name);
      ranges.push_back({.file = &st.file(), .offset = st.header().data_start + t.begin,
                        .dst = r.dst, .from = i.dtype, .to = r.dst_dtype, .tensor = r.name});
    } else {
      const Tensor& t = opened->torch_tensors.at(r.name);
      ranges.push_back(
          {.dst = r.dst, .src = t.bytes(), .from = i.dtype, .to = r.dst_dtype, .tensor = r.name});
    }
    keep.push_back(std::move(opened));
  }
  io::ParallelReadOptions options;
  options.threads = static_cast<unsigned>(std::max(threads > 0 ? threads : impl_->options.threads, 0));
  try {
    return io::read_parallel(ranges, options);
  } catch (const Error& e) {
    throw e.annotate(impl_->source());
  }
}

const SafetensorsHeader* ShardedReader::shard_header(size_t shard) const {
  const auto opened = impl_->shard(shard);
  return opened->safetensors ? &opened->safetensors->header() : nullptr;
}

uint64_t ShardedReader::shard_file_size(size_t shard) const { return impl_->shard(shard)->file_size; }

}  // namespace ckptio
