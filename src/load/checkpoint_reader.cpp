// CheckpointReader: one interface over a safetensors file, a sharded folder and a torch file.
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include <sys/mman.h>
#include <unistd.h>

#include "checkpoint/naming.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/dcp.h"
#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/load.h"
#include "ckptio/torch_pickle.h"
#include "ckptio/parallel_reader.h"

namespace ckptio {

struct CheckpointReader::Impl {
  ResolvedSource source;
  std::optional<SafetensorsReader> safetensors;
  std::optional<ShardedReader> sharded;
  std::optional<dcp::DcpReader> dcp;  // tensors assembled from their chunks when asked for
  std::optional<dist::Reader> distributed;
  std::map<std::string, Tensor> torch_tensors;
  std::optional<Metadata> torch_metadata;             // non-tensor leaves as JSON
  std::unordered_set<std::string> torch_mapped;       // zero-copy views of the file mapping
  std::vector<SourceTensorInfo> tensors;
  std::unordered_map<std::string, size_t> position;
};

CheckpointReader::CheckpointReader(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

namespace {

Error no_tensor(const std::filesystem::path& source, std::string_view name) {
  return Error(ErrorCode::NotFound,
               "'" + source.string() + "' has no tensor '" + std::string(name) + "'");
}

// Every request read straight into its destination in one parallel batch; another dtype is
// converted chunk by chunk as it is read (LoadItem::load_as), with no whole-tensor copy.
// `infos[i]` is the checked source tensor of requests[i].
uint64_t read_distributed(const dist::Reader& reader, std::span<const ReadRequest> requests,
                          const std::vector<const SourceTensorInfo*>& infos, int threads) {
  std::vector<dist::LoadItem> items;
  items.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const SourceTensorInfo& t = *infos[i];
    items.push_back({dist::ShardedTensor::replicated(t.name, t.dtype, t.shape), requests[i].dst,
                     requests[i].dst_dtype});
  }
  return reader.read(items, threads > 0 ? static_cast<unsigned>(threads) : 0).bytes_read;
}

}  // namespace

CheckpointReader CheckpointReader::open(const std::filesystem::path& path,
                                        const SourceOptions& options, ReadMode mode) {
  auto impl = std::make_shared<Impl>();
  io::Env& env = options.env ? *options.env : io::Env::posix();
  impl->source = resolve_checkpoint_source(path, options);
  const std::string where = "loading '" + impl->source.path.string() + "'";
  try {
    switch (impl->source.kind) {
      case SourceKind::SafetensorsFile: {
        impl->safetensors = SafetensorsReader::open(impl->source.path, {.mode = mode, .env = &env});
        for (const auto& t : impl->safetensors->tensors()) {
          impl->tensors.push_back({t.name, t.dtype, t.shape, t.nbytes()});
        }
        break;
      }
      case SourceKind::ShardedFolder: {
        ShardedReadOptions so;
        so.mode = mode;
        so.allowed_root = impl->source.allowed_root;
        so.env = &env;
        impl->sharded = ShardedReader::open(impl->source.path, so);
        for (const auto& t : impl->sharded->tensors()) {
          impl->tensors.push_back({t.name, t.dtype, t.shape, t.nbytes});
        }
        break;
      }
      case SourceKind::DistributedFolder: {
        dist::LoadOptions lo;
        lo.env = &env;
        impl->distributed = dist::Reader::open(impl->source.path.parent_path(), lo);
        impl->distributed->check_files();  // before anyone allocates for its tensors
        for (const auto& t : impl->distributed->index().tensors) {
          impl->tensors.push_back({t.name, t.dtype, t.shape, tensor_nbytes(t.dtype, t.shape)});
        }
        break;
      }
      case SourceKind::TorchOptimizerFolder: {
        // Through the training checkpoint reader, which knows ColossalAI's optimizer layout.
        OptimizerState state;
        CheckpointLoadOptions lo;
        lo.strict = false;
        lo.env = &env;
        LoadTargets targets;
        targets.optimizer = &state;
        // An empty target receives every tensor: nothing can be missing or mismatched.
        static_cast<void>(load_checkpoint_folder(impl->source.path.parent_path(), targets, lo));
        for (const auto& [param, keys] : state.tensors) {
          for (const auto& [key, t] : keys) impl->torch_tensors.emplace(checkpoint::optimizer_tensor_name(param, key), t);
        }
        for (const auto& [name, t] : impl->torch_tensors) {
          impl->tensors.push_back({name, t.dtype(), t.shape(), t.nbytes()});
        }
        break;
      }
      case SourceKind::DcpFolder: {
        impl->dcp = dcp::DcpReader::open(impl->source.path, &env);
        for (const auto& t : impl->dcp->metadata().tensors) {
          impl->tensors.push_back({t.name, t.dtype, t.shape, tensor_nbytes(t.dtype, t.shape)});
        }
        Metadata metadata;  // non-tensor values as JSON, as for a torch file
        for (const auto& b : impl->dcp->metadata().bytes) {
          metadata.emplace(b.name, pt::value_to_json(impl->dcp->read_value(b.name)));
        }
        if (!metadata.empty()) impl->torch_metadata = std::move(metadata);
        break;
      }
      case SourceKind::TorchFile: {
        // The tensors under options.torch_key, flattened to dotted names; the other leaves go
        // into the metadata.
        [&] {
          pt::TorchLoadOptions to;
          to.env = &env;
          to.verify_crc = options.verify_torch_crc;
          const pt::TorchFile file = pt::load_torch_file(impl->source.path, to);
          const pt::Value& value = pt::select_path(file.root, options.torch_key);
          const std::string& key = options.torch_key;
          const auto add = [&](const std::string& name, const pt::TorchTensor& t) {
            // Only the POSIX Env's maps are known to be private read-only file mappings; another
            // Env may hand out heap memory, where MADV_DONTNEED would zero the bytes.
            if (&env == &io::Env::posix() && t.storage && t.storage->zero_copy && t.is_contiguous()) {
              impl->torch_mapped.insert(name);
            }
            impl->torch_tensors.emplace(name, t.contiguous());
          };
          if (value.is_tensor()) {
            // Named by what selected it, never by a placeholder.
            add(key.empty() ? impl->source.path.stem().string() : key, value.as_tensor());
            return;
          }
          if (!value.is_dict() && !value.is_sequence()) {
            throw Error(ErrorCode::InvalidArgument,
                        (key.empty() ? std::string("the file") : "key '" + key + "'") + " holds a " +
                            std::string(pt::kind_name(value.kind())) + ", not tensors");
          }
          Metadata metadata;
          for (const pt::FlatEntry& e : pt::flatten(value)) {
            if (e.value->is_tensor()) {
              add(e.name, e.value->as_tensor());
            } else {
              metadata.emplace(e.name, pt::value_to_json(*e.value));
            }
          }
          if (impl->torch_tensors.empty() && !key.empty()) {
            throw Error(ErrorCode::InvalidArgument, "key '" + key + "' holds no tensor");
          }
          if (!metadata.empty()) impl->torch_metadata = std::move(metadata);
        }();
        for (const auto& [name, t] : impl->torch_tensors) {
          impl->tensors.push_back({name, t.dtype(), t.shape(), t.nbytes()});
        }
        break;
      }
    }
  } catch (const Error& e) {
    throw e.annotate(where);
  }
  for (size_t i = 0; i < impl->tensors.size(); ++i) impl->position.emplace(impl->tensors[i].name, i);
  return CheckpointReader(std::move(impl));
}

const ResolvedSource& CheckpointReader::source() const { return impl_->source; }
const std::vector<SourceTensorInfo>& CheckpointReader::tensors() const { return impl_->tensors; }

std::optional<Metadata> CheckpointReader::metadata() const {
  if (impl_->safetensors) return impl_->safetensors->metadata();
  if (impl_->sharded) return impl_->sharded->index().metadata;
  return impl_->torch_metadata;
}

Tensor CheckpointReader::tensor(std::string_view name) const {
  if (impl_->safetensors) return impl_->safetensors->tensor(name);
  if (impl_->sharded) return impl_->sharded->tensor(name);
  if (impl_->dcp) return impl_->dcp->read_tensor(name);
  if (impl_->distributed) {
    const dist::IndexTensor* t = impl_->distributed->find(name);
    if (!t) throw no_tensor(impl_->source.path, name);
    Tensor out = Tensor::empty(t->dtype, t->shape);
    impl_->distributed->read_tensor(name, out.mutable_bytes());
    return out;
  }
  auto it = impl_->torch_tensors.find(std::string(name));
  if (it == impl_->torch_tensors.end()) throw no_tensor(impl_->source.path, name);
  return it->second;
}

void CheckpointReader::release(std::string_view name) const {
  // Only tensors known to be views of the (private, read-only) file mapping: on heap memory
  // MADV_DONTNEED would zero the bytes.
  if (!impl_->torch_mapped.count(std::string(name))) return;
  const std::span<const std::byte> bytes = impl_->torch_tensors.at(std::string(name)).bytes();
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<uintptr_t>(bytes.data());
  const uintptr_t first = (start + page - 1) & ~(page - 1);
  const uintptr_t last = (start + bytes.size()) & ~(page - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::optional<std::span<const std::byte>> CheckpointReader::mapped_bytes(std::string_view name) const {
  if (!impl_->torch_mapped.count(std::string(name))) return std::nullopt;
  return impl_->torch_tensors.at(std::string(name)).bytes();
}

uint64_t CheckpointReader::read_into_many(std::span<const ReadRequest> requests, int threads) const {
  if (impl_->sharded) return impl_->sharded->read_into_many(requests, threads);
  // Every request is checked before any byte is read.
  std::vector<const SourceTensorInfo*> infos;
  infos.reserve(requests.size());
  for (const auto& r : requests) {
    auto it = impl_->position.find(r.name);
    if (it == impl_->position.end()) throw no_tensor(impl_->source.path, r.name);
    const SourceTensorInfo& info = impl_->tensors[it->second];
    const uint64_t want = tensor_nbytes(r.dst_dtype, info.shape);
    if (r.dst.size() != want) {
      throw Error(ErrorCode::InvalidArgument,
                  "destination for tensor '" + r.name + "' must be " + std::to_string(want) +
                      " bytes, got " + std::to_string(r.dst.size()));
    }
    infos.push_back(&info);
  }
  try {
    if (impl_->distributed) return read_distributed(*impl_->distributed, requests, infos, threads);
    std::vector<io::ReadRange> ranges;
    ranges.reserve(requests.size());
    uint64_t dcp_bytes = 0;
    for (size_t i = 0; i < requests.size(); ++i) {
      const ReadRequest& r = requests[i];
      const SourceTensorInfo& info = *infos[i];
      if (impl_->safetensors) {
        const auto& st = *impl_->safetensors;
        const TensorInfo& t = st.info(r.name);
        ranges.push_back({.file = &st.file(), .offset = st.header().data_start + t.begin,
                          .dst = r.dst, .from = info.dtype, .to = r.dst_dtype, .tensor = r.name});
      } else if (impl_->dcp) {
        // Chunk by chunk straight into the destination (converted as each chunk is placed):
        // memory beyond the destination stays within one saved chunk.
        impl_->dcp->read_box_into(r.name, Shape(info.shape.size(), 0), info.shape, r.dst_dtype, r.dst);
        dcp_bytes += info.nbytes;
      } else {
        ranges.push_back({.dst = r.dst, .src = impl_->torch_tensors.at(r.name).bytes(),
                          .from = info.dtype, .to = r.dst_dtype, .tensor = r.name});
      }
    }
    io::ParallelReadOptions options;
    options.threads = static_cast<unsigned>(std::max(threads, 0));
    return dcp_bytes + io::read_parallel(ranges, options);
  } catch (const Error& e) {
    throw e.annotate("loading '" + impl_->source.path.string() + "'");
  }
}

}  // namespace ckptio
