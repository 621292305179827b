#include "checkpoint/tensor_source.h"

#include <cstring>

#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "ckptio/sharded.h"
#include "ckptio/torch_pickle.h"

namespace ckptio::checkpoint {

namespace fs = std::filesystem;

SourceMap open_safetensors_source(io::Env& env, const fs::path& file) {
  auto reader = std::make_shared<SafetensorsReader>(SafetensorsReader::open(file, {.env = &env}));
  SourceMap out;
  for (const TensorInfo& info : reader->tensors()) {
    const std::string name = info.name;
    out[name] = SourceTensor{
        info.dtype, info.shape,
        [reader, name](std::span<std::byte> dst) { reader->read_into(name, dst); },
        [reader, name]() { return reader->read_owned(name); }};
  }
  return out;
}

SourceMap open_tensor_folder(io::Env& env, const fs::path& dir, const std::string& base) {
  const fs::path single = dir / (base + ".safetensors");
  bool has_index = false;
  for (const std::string& name : env.list_dir(dir)) {
    if (name.size() > 11 && name.ends_with(".index.json") && name[0] != '.') has_index = true;
  }
  if (!has_index) {
    if (env.stat(single).exists) return open_safetensors_source(env, single);
    throw Error(ErrorCode::NotFound, "'" + dir.string() + "' holds neither an index nor '" +
                                         base + ".safetensors'");
  }
  ShardedReadOptions options;
  options.env = &env;
  auto reader = std::make_shared<ShardedReader>(ShardedReader::open(dir, options));
  SourceMap out;
  for (const ShardedTensorInfo& info : reader->tensors()) {
    const std::string name = info.name;
    out[name] = SourceTensor{
        info.dtype, info.shape,
        [reader, name](std::span<std::byte> dst) { reader->read_into(name, dst); },
        [reader, name]() {
          Tensor t = reader->tensor(name);
          return t.storage() == Tensor::Storage::Heap ? t : t.clone();
        }};
  }
  return out;
}

SourceMap source_from_tensors(const TensorMap& tensors) {
  SourceMap out;
  for (const auto& [name, tensor] : tensors) {
    Tensor t = tensor;
    out[name] = SourceTensor{
        t.dtype(), t.shape(),
        [t](std::span<std::byte> dst) {
          if (!dst.empty()) std::memcpy(dst.data(), t.bytes().data(), dst.size());
        },
        [t]() { return t.clone(); }};
  }
  return out;
}

SourceMap open_torch_source(io::Env& env, const fs::path& file, const std::string& key) {
  pt::TorchLoadOptions options;
  options.env = &env;
  return source_from_tensors(pt::load_torch_state_dict(file, key, options));
}

void fill_tensor_map(const SourceMap& source, TensorMap& target, const std::string& component,
                     bool strict, LoadResult& result) {
  const std::string prefix = component + ":";
  if (target.empty()) {
    for (const auto& [name, src] : source) target[name] = src.read_owned();
    return;
  }
  std::vector<std::string> missing, unexpected, mismatched;
  std::vector<std::pair<const SourceTensor*, Tensor*>> plan;
  for (auto& [name, dst] : target) {
    auto it = source.find(name);
    if (it == source.end()) {
      missing.push_back(prefix + name);
      continue;
    }
    const SourceTensor& src = it->second;
    if (src.shape != dst.shape()) {
      mismatched.push_back(prefix + name + " shape " + shape_to_string(src.shape) +
                           " in the checkpoint, " + shape_to_string(dst.shape()) + " in the target");
      continue;
    }
    if (src.dtype != dst.dtype() && !can_convert(src.dtype, dst.dtype())) {
      mismatched.push_back(prefix + name + " dtype " + std::string(dtype_name(src.dtype)) +
                           " in the checkpoint cannot be converted to " +
                           std::string(dtype_name(dst.dtype())));
      continue;
    }
    if (dst.storage() == Tensor::Storage::Mapped) {
      mismatched.push_back(prefix + name + " target is read-only");
      continue;
    }
    plan.emplace_back(&src, &dst);
  }
  for (const auto& [name, src] : source) {
    if (target.count(name) == 0) unexpected.push_back(prefix + name);
  }
  if (strict && (!missing.empty() || !unexpected.empty() || !mismatched.empty())) {
    std::string msg = "component '" + component + "' does not match the target:";
    auto list = [&msg](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return;
      msg += std::string(" ") + what + " (" + std::to_string(names.size()) + "):";
      for (const auto& n : names) msg += " " + n + ";";
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("mismatched", mismatched);
    throw Error(ErrorCode::Mismatch, msg);
  }
  for (auto [src, dst] : plan) {
    if (src->dtype == dst->dtype()) {
      src->read_into(dst->mutable_bytes());
    } else {
      const Tensor owned = src->read_owned();
      convert_elements(src->dtype, owned.bytes().data(), dst->dtype(),
                       dst->mutable_bytes().data(), static_cast<size_t>(owned.numel()));
    }
  }
  auto append = [](std::vector<std::string>& to, std::vector<std::string>& from) {
    to.insert(to.end(), from.begin(), from.end());
  };
  append(result.missing, missing);
  append(result.unexpected, unexpected);
  append(result.mismatched, mismatched);
}

}  // namespace ckptio::checkpoint
