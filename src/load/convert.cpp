// convert_checkpoint, the one conversion path: any readable source to one safetensors file
// (streamed, verified before it is published) or a sharded folder (verified after save_sharded),
// and torch files with shared storages deduplicated through the torch converter.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <functional>
#include <memory>
#include <string>

#include "ckptio/error.h"
#include "ckptio/async_writer.h"
#include "ckptio/load.h"
#include "ckptio/sharded.h"
#include "ckptio/torch_pickle.h"
#include "format/torch/zip_crc32.h"
#include "format/torch/zip_reader.h"
#include "load/read_all.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;

// Output bytes compared per read when the written file is checked against the source.
constexpr uint64_t kCompareChunk = uint64_t{16} << 20;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The base name of the output folder: the source index's base, with the pickle era's
// "pytorch_model" becoming "model" (what transformers reads).
std::string default_base_name(const ResolvedSource& source) {
  std::string base = "model";
  if (source.kind == SourceKind::ShardedFolder) {
    std::string name = source.path.filename().string();
    for (std::string_view tail : {".safetensors.index.json", ".bin.index.json", ".index.json"}) {
      if (ends_with(name, tail)) {
        base = name.substr(0, name.size() - tail.size());
        break;
      }
    }
  }
  if (base == "pytorch_model") base = "model";
  if (base == "pytorch_optim") base = "optimizer";
  if (base.empty() || base.front() == '.') base = "model";
  return base;
}

// Device and inode, links followed; false when either does not exist.
bool same_file(io::Env& env, const fs::path& a, const fs::path& b) {
  const io::FileInfo x = env.stat_target(a);
  const io::FileInfo y = env.stat_target(b);
  return x.exists && y.exists && x.inode != 0 && x.device == y.device && x.inode == y.inode;
}

// The output must not silently replace the input.
void refuse_output_equal_to_input(io::Env& env, const fs::path& src,
                                  const ResolvedSource& source, const fs::path& dst,
                                  const ConvertOptions& options) {
  if (options.in_place) return;
  const bool same = same_file(env, dst, src) || same_file(env, dst, source.path) ||
                    (source.kind == SourceKind::ShardedFolder &&
                     same_file(env, dst, source.path.parent_path()));
  if (same) {
    throw Error(ErrorCode::InvalidArgument,
                "the output '" + dst.string() + "' is the input '" + src.string() +
                    "'; write elsewhere, or pass --in-place to replace it");
  }
}

// --- temp files of this writer -----------------------------------------------------------------

std::string temp_prefix(const fs::path& dst) { return "." + dst.filename().string() + ".tmp-convert-"; }

bool process_alive(long pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// Leftovers of converts to the same output that were killed: our exact name pattern, the writing
// process gone (pid in the name) and no lock held on the file (a live writer holds one even when
// its pid is not visible here, e.g. from another container).
std::vector<std::string> remove_stale_temp_files(io::Env& env, const fs::path& dst) {
  const fs::path dir = dst.parent_path().empty() ? fs::path(".") : dst.parent_path();
  const std::string prefix = temp_prefix(dst);
  std::vector<std::string> removed;
  if (!env.stat(dir).exists) return removed;
  for (const std::string& name : env.list_dir(dir)) {
    if (!name.starts_with(prefix)) continue;
    const std::string rest = name.substr(prefix.size());  // <pid>-<random>
    const size_t dash = rest.find('-');
    if (dash == 0 || dash == std::string::npos ||
        !std::all_of(rest.begin(), rest.begin() + static_cast<long>(dash),
                     [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    if (process_alive(std::stol(rest.substr(0, dash)))) continue;
    // Its writer holds the lock until the file is renamed or removed; taking it proves the
    // writer gone. The lock is held across the removal so that no new holder can appear.
    try {
      const auto lock = env.lock_file(dir / name, io::LockCreate::Never);
      if (lock == nullptr) continue;
      env.remove(dir / name);
      removed.push_back(name);
    } catch (const Error&) {
      // Gone meanwhile, or not ours to remove: leave it.
    }
  }
  return removed;
}

// --- torch zip records, checked one buffer at a time -------------------------------------------

void check_zip_crcs_streaming(io::Env& env, const fs::path& path) {
  const auto file = env.open_read(path);
  std::array<std::byte, 4> head{};
  if (file->size() < head.size()) return;
  file->read_exact(0, head);
  if (!pt::starts_like_zip(head)) return;  // legacy files are checked when read (whole)
  std::vector<pt::ZipEntry> entries;
  {
    // The central directory is parsed on a mapping that only lives for the parse.
    const auto mapping = env.map_read(path);
    entries = pt::ZipArchive::parse(mapping->bytes(), path.string()).entries();
  }
  const auto buffer = std::make_unique_for_overwrite<std::byte[]>(kCompareChunk);
  for (const pt::ZipEntry& e : entries) {
    if (e.method != 0) continue;  // the torch reader refuses compressed records with a message
    uint32_t crc = 0;
    for (uint64_t done = 0; done < e.size;) {
      const uint64_t n = std::min(kCompareChunk, e.size - done);
      const std::span<std::byte> chunk(buffer.get(), static_cast<size_t>(n));
      file->read_exact(e.data_offset + done, chunk);
      crc = pt::zip_crc32(crc, chunk);
      done += n;
    }
    if (crc != e.crc32) {
      throw Error(ErrorCode::Corrupt, "'" + path.string() + "': record '" + e.name +
                                          "' (at byte " + std::to_string(e.data_offset) +
                                          ") does not match its CRC-32");
    }
  }
}

// --- the streaming single-file writer ----------------------------------------------------------

// Drops the whole pages inside `bytes`, which must come from CheckpointReader::mapped_bytes.
void drop_mapped_pages(std::span<const std::byte> bytes) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<uintptr_t>(bytes.data());
  const uintptr_t first = (start + page - 1) & ~(page - 1);
  const uintptr_t last = (start + bytes.size()) & ~(page - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

struct Plan {
  std::vector<NamedTensor> views;  // every view points into the staging buffer (sizes only)
  std::vector<DType> out_dtype;    // per source tensor
  SafetensorsLayout layout;
};

// Reads tensor i of the source (converted to its output dtype) into `staging`.
std::span<std::byte> read_tensor(const CheckpointReader& reader, const Plan& plan, size_t i,
                                 std::byte* staging, int threads) {
  const SourceTensorInfo& info = reader.tensors()[i];
  const std::span<std::byte> dst(staging, plan.views[i].view.bytes.size());
  const ReadRequest request{info.name, plan.out_dtype[i], dst};
  reader.read_into_many(std::span(&request, 1), threads);
  reader.release(info.name);
  return dst;
}

// Calls `fn(offset, chunk)` over tensor i's output bytes, kCompareChunk at a time. A tensor that
// is a file mapping and needs no cast is walked in place, each window's pages dropped after use
// (memory: one window); any other is read (and cast) whole into `staging` first.
void for_each_chunk(const CheckpointReader& reader, const Plan& plan, size_t i, std::byte* staging,
                    int threads, const std::function<void(uint64_t, std::span<const std::byte>)>& fn) {
  const SourceTensorInfo& info = reader.tensors()[i];
  std::span<const std::byte> bytes;
  const auto mapped = plan.out_dtype[i] == info.dtype ? reader.mapped_bytes(info.name) : std::nullopt;
  if (mapped) {
    bytes = *mapped;
  } else {
    bytes = read_tensor(reader, plan, i, staging, threads);
  }
  for (uint64_t done = 0; done < bytes.size();) {
    const uint64_t n = std::min<uint64_t>(kCompareChunk, bytes.size() - done);
    const std::span<const std::byte> chunk = bytes.subspan(done, n);
    fn(done, chunk);
    if (mapped) drop_mapped_pages(chunk);
    done += n;
  }
}

// Every tensor of the written file equals a fresh read of the source; the header says what the
// plan said.
size_t verify_written(const CheckpointReader& reader, const Plan& plan, const fs::path& temp,
                      const fs::path& dst, io::Env& env, std::byte* staging, int threads) {
  const SafetensorsReader out = SafetensorsReader::open(temp, {.mode = ReadMode::Pread, .env = &env});
  const auto fail = [&](const std::string& what) {
    throw Error(ErrorCode::Mismatch, "read-back of '" + dst.string() + "' differs from the source: " + what);
  };
  if (out.tensors().size() != plan.layout.entries.size()) fail("tensor count");
  const auto buffer = std::make_unique_for_overwrite<std::byte[]>(kCompareChunk);
  for (size_t j = 0; j < plan.layout.entries.size(); ++j) {
    const TensorInfo& want = plan.layout.entries[j];
    const TensorInfo& got = out.tensors()[j];
    if (got.name != want.name || got.dtype != want.dtype || got.shape != want.shape ||
        got.begin != want.begin || got.end != want.end) {
      fail("tensor '" + want.name + "' has another name, dtype, shape or place");
    }
    for_each_chunk(reader, plan, plan.layout.order[j], staging, threads,
                   [&](uint64_t done, std::span<const std::byte> source) {
                     const std::span<std::byte> chunk(buffer.get(), source.size());
                     out.file().read_exact(out.header().data_start + got.begin + done, chunk);
                     if (std::memcmp(chunk.data(), source.data(), source.size()) != 0) {
                       fail("tensor '" + want.name + "' differs within bytes " +
                            std::to_string(done) + ".." + std::to_string(done + source.size()));
                     }
                   });
  }
  return plan.layout.entries.size();
}

void convert_to_file(const CheckpointReader& reader, const fs::path& dst,
                     const ConvertOptions& options, ConvertReport& report) {
  io::Env& env = options.source.env ? *options.source.env : io::Env::posix();
  const auto& infos = reader.tensors();
  Plan plan;
  uint64_t largest = 0;
  for (const auto& info : infos) {
    const bool cast = options.dtype && info.dtype != *options.dtype && dtype_is_float(info.dtype) &&
                      can_convert(info.dtype, *options.dtype);
    plan.out_dtype.push_back(cast ? *options.dtype : info.dtype);
    report.converted += cast ? 1 : 0;
    largest = std::max(largest, tensor_nbytes(plan.out_dtype.back(), info.shape));
  }
  report.tensor_bytes = 0;
  for (size_t i = 0; i < infos.size(); ++i) report.tensor_bytes += tensor_nbytes(plan.out_dtype[i], infos[i].shape);
  if (options.max_shard_size != 0 && report.tensor_bytes > options.max_shard_size) {
    throw Error(ErrorCode::InvalidArgument,
                "the tensors (" + std::to_string(report.tensor_bytes) +
                    " bytes) exceed --max-shard-size; give a folder as the output to shard them");
  }
  // One staging buffer of the largest output tensor: pages are only touched when used.
  const auto staging = std::make_unique_for_overwrite<std::byte[]>(std::max<uint64_t>(largest, 1));
  for (size_t i = 0; i < infos.size(); ++i) {
    const uint64_t n = tensor_nbytes(plan.out_dtype[i], infos[i].shape);
    plan.views.push_back({infos[i].name, {plan.out_dtype[i], infos[i].shape, {staging.get(), n}}});
  }
  SafetensorsWriteOptions wo;
  const std::optional<Metadata> metadata = reader.metadata();
  if (report.source.kind == SourceKind::SafetensorsFile && report.converted == 0) {
    // Same tensors, same metadata: exactly what the reference writer makes of them.
    wo.metadata = metadata;
    wo.omit_metadata = !metadata.has_value();
  } else {
    Metadata m{{"format", "pt"}};
    if (metadata) {
      for (const auto& [k, v] : *metadata) m.emplace(k, v);
    }
    wo.metadata = std::move(m);
  }
  plan.layout = plan_safetensors(plan.views, wo);

  report.removed_temp_files = remove_stale_temp_files(env, dst);
  const fs::path dir = dst.parent_path().empty() ? fs::path(".") : dst.parent_path();
  const fs::path temp = dir / (temp_prefix(dst) + std::to_string(::getpid()) + "-" + io::random_suffix());
  auto fill = [&](io::WritableFile& out) {
    // Held while the bytes are written: tells a later convert that the file is not stale. Best
    // effort: a later convert also spares the temp file of a live process (the pid in its name),
    // which covers the fsync and rename after this returns.
    std::unique_ptr<io::FileLock> held;
    try {
      held = env.lock_file(temp, io::LockCreate::Never);
    } catch (const Error&) {
    }
    // The bytes go through the async writer as copies (the source chunk is dropped or reused
    // right after), at most one compare chunk in flight: memory stays bounded.
    io::AsyncWriterOptions wo;
    wo.env = &env;
    wo.sync = false;  // write_file_atomic fsyncs the file once
    wo.threads = 2;
    wo.chunk_bytes = kCompareChunk;
    wo.max_bytes_in_flight = kCompareChunk;
    // Borrowed by the writer until synchronize(); declared first, so that they outlive the
    // writer's destructor (which waits for queued chunks) when a submit throws.
    std::deque<std::string> labels;
    io::AsyncWriter writer(wo);
    const auto id = writer.attach(out);
    writer.submit(id, 0, std::as_bytes(std::span(plan.layout.header)), "header");
    const uint64_t data_start = plan.layout.header.size();
    for (size_t j = 0; j < plan.layout.order.size(); ++j) {
      const uint64_t at = data_start + plan.layout.entries[j].begin;
      labels.push_back("tensor \"" + plan.layout.entries[j].name + "\"");
      for_each_chunk(reader, plan, plan.layout.order[j], staging.get(), options.threads,
                     [&](uint64_t done, std::span<const std::byte> chunk) {
                       writer.submit_copy(id, at + done, chunk, labels.back());
                     });
    }
    writer.synchronize();
    out.truncate(plan.layout.file_size);
    // Proven equal before it is published.
    report.verified = verify_written(reader, plan, temp, dst, env, staging.get(), options.threads);
  };
  io::write_file_atomic(env, dst, fill, {.sync = options.sync, .temp = temp});
  report.shards = 1;
}

// A folder output, read back: every shard holds exactly the tensors it should, with the bytes
// that were written.
size_t verify_folder(const fs::path& dst, const ShardedWriteResult& written,
                     std::span<const NamedTensor> views, io::Env& env) {
  std::map<std::string_view, const NamedTensor*> by_name;
  for (const auto& v : views) by_name.emplace(v.name, &v);
  const auto fail = [&](const std::string& what) {
    throw Error(ErrorCode::Mismatch, "read-back of '" + dst.string() + "' differs from the source: " + what);
  };
  size_t verified = 0;
  for (const auto& shard : written.shards) {
    const SafetensorsReader out = SafetensorsReader::open(dst / shard.name, {.env = &env});
    for (const TensorInfo& got : out.tensors()) {
      const auto it = by_name.find(got.name);
      if (it == by_name.end()) fail("'" + shard.name + "' holds an unknown tensor '" + got.name + "'");
      const TensorView& want = it->second->view;
      if (got.dtype != want.dtype || got.shape != want.shape) {
        fail("tensor '" + got.name + "' has another dtype or shape");
      }
      const Tensor back = out.tensor(got.name);
      if (back.nbytes() != want.bytes.size() ||
          (!want.bytes.empty() && std::memcmp(back.bytes().data(), want.bytes.data(), want.bytes.size()) != 0)) {
        fail("tensor '" + got.name + "' bytes differ");
      }
      ++verified;
    }
  }
  if (verified != views.size()) {
    fail(std::to_string(verified) + " tensors in the shards, " + std::to_string(views.size()) + " written");
  }
  return verified;
}

// dedupe_shared: the torch converter, which knows which views share a storage; it verifies its
// output before publishing it.
ConvertReport convert_torch_deduped(const fs::path& src, const fs::path& dst,
                                    const ConvertOptions& options, bool single_file) {
  if (!single_file || options.max_shard_size != 0 || options.dtype) {
    throw Error(ErrorCode::InvalidArgument,
                "--dedupe-shared writes one .safetensors file, without --max-shard-size or --dtype");
  }
  const ResolvedSource resolved = resolve_checkpoint_source(src, options.source);
  if (resolved.kind != SourceKind::TorchFile) {
    throw Error(ErrorCode::InvalidArgument,
                "--dedupe-shared needs a torch file (.pt/.pth/.bin) as the source");
  }
  io::Env& env = options.source.env != nullptr ? *options.source.env : io::Env::posix();
  refuse_output_equal_to_input(env, src, resolved, dst, options);
  const std::string& key = options.source.torch_key;
  pt::TorchLoadOptions load;
  load.env = options.source.env;
  {
    // The same refusals as the general converter: a key must select tensors, and a lone tensor
    // has nothing to dedupe (the general converter names it by its key).
    pt::TorchLoadOptions lo = load;
    lo.verify_crc = false;  // the converter checks every record
    const pt::TorchFile f = pt::load_torch_file(resolved.path, lo);
    const pt::Value& v = pt::select_path(f.root, key);
    if (v.is_tensor()) {
      throw Error(ErrorCode::InvalidArgument,
                  "key '" + key + "' selects a single tensor: convert it without --dedupe-shared");
    }
    if ((!v.is_dict() && !v.is_sequence()) || pt::flatten_tensors(v).empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  (key.empty() ? std::string("the file") : "key '" + key + "'") + " holds no tensor");
    }
  }
  pt::TorchConvertOptions to;
  to.key = key;
  to.dedupe_shared = true;
  to.sync = options.sync;
  to.load = load;
  const pt::TorchConvertReport r = pt::convert_torch_to_safetensors(resolved.path, dst, to);
  ConvertReport report;
  report.source = resolved;
  report.output = dst;
  report.tensors = r.tensors_written;
  report.tensor_bytes = r.data_bytes;
  report.shards = 1;
  report.verified = r.tensors_written;
  report.aliases = r.aliases;
  return report;
}

}  // namespace

ConvertReport convert_checkpoint(const fs::path& src, const fs::path& dst,
                                 const ConvertOptions& options) {
  io::Env& env = options.source.env ? *options.source.env : io::Env::posix();
  ConvertReport report;
  report.output = dst;
  const bool single_file = ends_with(dst.filename().string(), ".safetensors");
  if (options.dedupe_shared) return convert_torch_deduped(src, dst, options, single_file);
  SourceOptions source_options = options.source;
  if (single_file) {
    // Streaming: torch records are CRC-checked below one buffer at a time instead of all at once.
    const ResolvedSource resolved = resolve_checkpoint_source(src, source_options);
    if (resolved.kind == SourceKind::TorchFile && source_options.verify_torch_crc) {
      check_zip_crcs_streaming(env, resolved.path);
      source_options.verify_torch_crc = false;
    }
  }
  const CheckpointReader reader =
      CheckpointReader::open(src, source_options, single_file ? ReadMode::Pread : ReadMode::Mmap);
  report.source = reader.source();
  refuse_output_equal_to_input(env, src, report.source, dst, options);
  for (const auto& info : reader.tensors()) report.tensor_bytes += info.nbytes;
  report.tensors = reader.tensors().size();

  if (single_file) {
    convert_to_file(reader, dst, options, report);
    return report;
  }

  const auto& infos = reader.tensors();
  detail::ReadAllResult all = detail::read_all_tensors(reader, options.dtype, options.threads);
  std::vector<Tensor>& tensors = all.tensors;
  for (bool c : all.converted) report.converted += c ? 1 : 0;
  std::vector<NamedTensor> views;
  report.tensor_bytes = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    views.push_back({infos[i].name, tensors[i].view()});
    report.tensor_bytes += tensors[i].nbytes();
  }
  const std::optional<Metadata> metadata = reader.metadata();
  ShardedWriteOptions so;
  so.max_shard_size = options.max_shard_size != 0 ? options.max_shard_size : kDefaultMaxShardSize;
  so.base_name = options.base_name.empty() ? default_base_name(report.source) : options.base_name;
  so.threads = options.threads;
  so.sync = options.sync;
  so.env = options.source.env;
  if (metadata) {
    for (const auto& [k, v] : *metadata) {
      if (k != "format" && k != "total_size") so.metadata.emplace(k, v);
    }
  }
  const ShardedWriteResult written = save_sharded(dst, views, so);
  report.shards = written.shards.size();
  report.verified = verify_folder(dst, written, views, env);
  return report;
}

}  // namespace ckptio
