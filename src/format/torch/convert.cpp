// .pt -> safetensors: flatten, write crash-safely, and prove the output by reading it back
// before it is renamed into place.
#include <cstring>
#include <nlohmann/json.hpp>
#include <tuple>

#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "ckptio/torch_pickle.h"
#include "format/safetensors/file_writer.h"

namespace ckptio::pt {

namespace {

// Two names are the same bytes exactly when they are the same view of the same storage.
using ViewKey = std::tuple<const TorchStorage*, DType, int64_t, Shape, std::vector<int64_t>>;

ViewKey view_key(const TorchTensor& t) {
  return {t.storage.get(), t.dtype, t.storage_offset, t.sizes, t.strides};
}

void verify_output(const std::filesystem::path& temp, const std::filesystem::path& dst,
                   io::Env& env, const std::vector<std::pair<std::string, Tensor>>& written,
                   const Metadata& metadata) {
  const SafetensorsReader reader = SafetensorsReader::open(temp, {.env = &env});
  auto mismatch = [&](const std::string& what) {
    throw Error(ErrorCode::Mismatch, dst.string() + ": read-back differs from the source: " + what);
  };
  if (reader.tensors().size() != written.size()) {
    mismatch(std::to_string(reader.tensors().size()) + " tensors, expected " +
             std::to_string(written.size()));
  }
  for (const auto& [name, source] : written) {
    const TensorInfo* info = reader.find(name);
    if (info == nullptr) mismatch("tensor '" + name + "' is missing");
    if (info->dtype != source.dtype() || info->shape != source.shape()) {
      mismatch("tensor '" + name + "' has dtype/shape " + std::string(dtype_name(info->dtype)) +
               shape_to_string(info->shape));
    }
    const Tensor back = reader.tensor(name);
    if (back.nbytes() != source.nbytes() ||
        (source.nbytes() != 0 &&
         std::memcmp(back.bytes().data(), source.bytes().data(), source.nbytes()) != 0)) {
      mismatch("tensor '" + name + "' bytes differ");
    }
  }
  if (!reader.metadata() || *reader.metadata() != metadata) mismatch("metadata differs");
}

}  // namespace

TorchConvertReport convert_torch_to_safetensors(const std::filesystem::path& src,
                                                const std::filesystem::path& dst,
                                                const TorchConvertOptions& options) {
  io::Env& env = options.load.env ? *options.load.env : io::Env::posix();
  const TorchFile file = load_torch_file(src, options.load);
  const Value* selected;
  try {
    selected = &select_path(file.root, options.key);
  } catch (const Error& e) {
    throw e.annotate(src.string());
  }

  TorchConvertReport report;
  Metadata metadata{{"format", "pt"}};
  std::vector<std::pair<std::string, Tensor>> written;
  std::map<ViewKey, std::string> first_name;
  nlohmann::json aliases = nlohmann::json::object();
  for (const FlatEntry& leaf : flatten(*selected)) {
    if (!leaf.value->is_tensor()) {
      if (leaf.name == "format" || leaf.name == kAliasesMetadataKey) {
        throw Error(ErrorCode::InvalidArgument,
                    src.string() + ": value '" + leaf.name + "' collides with a metadata key ckptio writes");
      }
      metadata[leaf.name] = value_to_json(*leaf.value);
      ++report.metadata_values;
      continue;
    }
    const TorchTensor& t = leaf.value->as_tensor();
    if (options.dedupe_shared) {
      const auto [it, first] = first_name.emplace(view_key(t), leaf.name);
      if (!first) {
        aliases[leaf.name] = it->second;
        ++report.aliases;
        continue;
      }
    }
    written.emplace_back(leaf.name, t.contiguous());
  }
  if (!aliases.empty()) metadata[std::string(kAliasesMetadataKey)] = aliases.dump();

  std::vector<NamedTensor> named;
  named.reserve(written.size());
  for (const auto& [name, tensor] : written) {
    named.push_back(NamedTensor{name, tensor.view()});
    report.data_bytes += tensor.nbytes();
  }
  report.tensors_written = named.size();
  SafetensorsWriteOptions write;
  write.metadata = metadata;
  const SafetensorsLayout layout = plan_safetensors(named, write);
  // The output is read back and compared under its temp name, so that no file that was not
  // proven equal is ever published under `dst`.
  const std::filesystem::path temp = io::temp_path_for(dst);
  try {
    io::write_file_atomic(
        env, dst,
        [&](io::WritableFile& file) {
          const detail::SafetensorsFileJob job{&file, &layout, named};
          // write_file_atomic fsyncs the file once it is filled.
          detail::write_safetensors_files(std::span(&job, 1),
                                          {.env = &env, .sync = false, .synced_by_caller = options.sync});
          verify_output(temp, dst, env, written, metadata);
        },
        {.sync = options.sync, .temp = temp});
  } catch (const Error& e) {
    throw e.annotate("converting " + src.string());
  }
  return report;
}

}  // namespace ckptio::pt
