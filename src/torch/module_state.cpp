// Module state and EMA: libtorch parameters and buffers as ckptio tensors, and strict loads back.
#include <torch/nn/module.h>
#include <torch/utils.h>

#include <fmt/format.h>

#include <memory>
#include <set>

#include "ckptio/error.h"
#include "ckptio/torch.h"

namespace ckptio::libtorch {

namespace {

// Parameters first, then buffers (both recursive, dotted names), skipping undefined tensors.
std::vector<std::pair<std::string, at::Tensor>> named_tensors(const torch::nn::Module& module,
                                                              std::map<std::string, bool>* kinds) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (!item.value().defined()) continue;
    out.emplace_back(item.key(), item.value());
    if (kinds) (*kinds)[item.key()] = true;
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    if (!item.value().defined()) continue;
    out.emplace_back(item.key(), item.value());
    if (kinds) (*kinds)[item.key()] = false;
  }
  return out;
}

Shape shape_of(const at::Tensor& t) { return Shape(t.sizes().begin(), t.sizes().end()); }

void require_cpu(const at::Tensor& t, const std::string& name) {
  if (!t.device().is_cpu()) {
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("tensor '{}' is on {}, the adapters handle CPU tensors only", name,
                            t.device().str()));
  }
}

// A torch tensor over the ckptio bytes, without copying; only ever read from.
at::Tensor read_only_torch_view(const Tensor& t) {
  auto options = at::TensorOptions().dtype(torch_dtype_of(t.dtype()));
  std::vector<int64_t> sizes(t.shape().begin(), t.shape().end());
  // from_blob wants a non-const pointer; the tensor is used only as the source of copy_().
  void* data = const_cast<std::byte*>(t.bytes().data());
  return torch::from_blob(data, sizes, options);
}

MismatchReport compare(const std::vector<std::pair<std::string, at::Tensor>>& own,
                       const TensorMap& state) {
  MismatchReport m;
  std::set<std::string> own_names;
  for (const auto& [name, tensor] : own) {
    own_names.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      m.missing.push_back(name);
      continue;
    }
    const Shape own_shape = shape_of(tensor);
    const DType own_dtype = dtype_of(tensor.scalar_type());
    if (it->second.shape() != own_shape || it->second.dtype() != own_dtype) {
      m.mismatched.push_back(fmt::format("{}: checkpoint {} {}, model {} {}", name,
                                         dtype_name(it->second.dtype()),
                                         shape_to_string(it->second.shape()),
                                         dtype_name(own_dtype), shape_to_string(own_shape)));
    }
  }
  for (const auto& [name, tensor] : state) {
    if (!own_names.count(name)) m.unexpected.push_back(name);
  }
  return m;
}

MismatchReport load_into(const std::vector<std::pair<std::string, at::Tensor>>& own,
                         const TensorMap& state, bool strict, std::string_view what) {
  MismatchReport m = compare(own, state);
  if (strict && !m.ok()) {
    throw Error(ErrorCode::Mismatch, fmt::format("strict load into {}: {} mismatch{}:\n{}", what,
                                                 m.count(), m.count() == 1 ? "" : "es",
                                                 m.describe()));
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : own) {
    auto it = state.find(name);
    if (it == state.end() || it->second.shape() != shape_of(tensor)) continue;
    require_cpu(tensor, name);
    tensor.detach().copy_(read_only_torch_view(it->second));
  }
  return m;
}

}  // namespace

DType dtype_of(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Bool: return DType::BOOL;
    case c10::ScalarType::Byte: return DType::U8;
    case c10::ScalarType::Char: return DType::I8;
    case c10::ScalarType::Short: return DType::I16;
    case c10::ScalarType::Int: return DType::I32;
    case c10::ScalarType::Long: return DType::I64;
    case c10::ScalarType::Half: return DType::F16;
    case c10::ScalarType::BFloat16: return DType::BF16;
    case c10::ScalarType::Float: return DType::F32;
    case c10::ScalarType::Double: return DType::F64;
    case c10::ScalarType::ComplexFloat: return DType::C64;
    default:
      throw Error(ErrorCode::Unsupported,
                  fmt::format("torch dtype {} has no safetensors equivalent",
                              c10::toString(type)));
  }
}

c10::ScalarType torch_dtype_of(DType dtype) {
  switch (dtype) {
    case DType::BOOL: return c10::ScalarType::Bool;
    case DType::U8: return c10::ScalarType::Byte;
    case DType::I8: return c10::ScalarType::Char;
    case DType::I16: return c10::ScalarType::Short;
    case DType::I32: return c10::ScalarType::Int;
    case DType::I64: return c10::ScalarType::Long;
    case DType::F16: return c10::ScalarType::Half;
    case DType::BF16: return c10::ScalarType::BFloat16;
    case DType::F32: return c10::ScalarType::Float;
    case DType::F64: return c10::ScalarType::Double;
    case DType::C64: return c10::ScalarType::ComplexFloat;
    default:
      throw Error(ErrorCode::Unsupported,
                  fmt::format("dtype {} has no libtorch 1.13 equivalent", dtype_name(dtype)));
  }
}

Tensor from_torch(const at::Tensor& tensor, SnapshotMode mode, const std::string& name) {
  require_cpu(tensor, name);
  const DType dtype = dtype_of(tensor.scalar_type());
  Shape shape = shape_of(tensor);
  if (mode == SnapshotMode::Copy) {
    const at::Tensor contiguous = tensor.detach().contiguous();
    const auto* data = static_cast<const std::byte*>(contiguous.data_ptr());
    return Tensor::copy_of(dtype, std::move(shape),
                           {data, static_cast<size_t>(contiguous.nbytes())});
  }
  if (!tensor.is_contiguous()) {
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("tensor '{}' is not contiguous and cannot be borrowed", name));
  }
  // The view holds a reference to the tensor, so its storage outlives every writer using it.
  auto owner = std::make_shared<const at::Tensor>(tensor.detach());
  const auto* data = static_cast<const std::byte*>(owner->data_ptr());
  return Tensor::from_owner(dtype, std::move(shape), {data, static_cast<size_t>(owner->nbytes())},
                            owner, Tensor::Storage::Borrowed);
}

at::Tensor to_torch(const Tensor& tensor) { return read_only_torch_view(tensor).clone(); }

TensorMap module_state(const torch::nn::Module& module, SnapshotMode mode) {
  TensorMap out;
  for (const auto& [name, tensor] : named_tensors(module, nullptr)) {
    out.emplace(name, from_torch(tensor, mode, name));
  }
  return out;
}

TensorMap module_targets(torch::nn::Module& module) {
  TensorMap out;
  for (const auto& [name, tensor] : named_tensors(module, nullptr)) {
    require_cpu(tensor, name);
    if (!tensor.is_contiguous()) {
      throw Error(ErrorCode::InvalidArgument,
                  fmt::format("tensor '{}' is not contiguous and cannot be a load target", name));
    }
    auto* data = static_cast<std::byte*>(tensor.data_ptr());
    out.emplace(name, Tensor::borrow(dtype_of(tensor.scalar_type()), shape_of(tensor),
                                     {data, static_cast<size_t>(tensor.nbytes())}));
  }
  return out;
}

MismatchReport compare_module_state(const torch::nn::Module& module, const TensorMap& state) {
  return compare(named_tensors(module, nullptr), state);
}

MismatchReport load_module_state(torch::nn::Module& module, const TensorMap& state, bool strict) {
  return load_into(named_tensors(module, nullptr), state, strict,
                   fmt::format("module {}", module.name()));
}

Ema::Ema(const torch::nn::Module& module) {
  for (const auto& [name, tensor] : named_tensors(module, &is_parameter_)) {
    require_cpu(tensor, name);
    tensors_.emplace(name, tensor.detach().clone());
  }
}

void Ema::update(const torch::nn::Module& module, double decay) {
  const auto own = named_tensors(module, nullptr);
  std::vector<std::pair<std::string, at::Tensor>> mine(tensors_.begin(), tensors_.end());
  TensorMap shapes;
  for (const auto& [name, tensor] : own) shapes.emplace(name, from_torch(tensor, SnapshotMode::Borrow, name));
  const MismatchReport m = compare(mine, shapes);
  if (!m.ok()) {
    throw Error(ErrorCode::Mismatch,
                fmt::format("EMA update: the module does not match the EMA:\n{}", m.describe()));
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : own) {
    at::Tensor& avg = tensors_.at(name);
    if (is_parameter_.at(name)) {
      avg.mul_(decay).add_(tensor.detach(), 1.0 - decay);
    } else {
      avg.copy_(tensor.detach());
    }
  }
}

TensorMap Ema::state(SnapshotMode mode) const {
  TensorMap out;
  for (const auto& [name, tensor] : tensors_) out.emplace(name, from_torch(tensor, mode, name));
  return out;
}

TensorMap Ema::targets() {
  TensorMap out;
  for (auto& [name, tensor] : tensors_) {
    auto* data = static_cast<std::byte*>(tensor.data_ptr());
    out.emplace(name, Tensor::borrow(dtype_of(tensor.scalar_type()), shape_of(tensor),
                                     {data, static_cast<size_t>(tensor.nbytes())}));
  }
  return out;
}

MismatchReport Ema::load_state(const TensorMap& state, bool strict) {
  std::vector<std::pair<std::string, at::Tensor>> mine(tensors_.begin(), tensors_.end());
  return load_into(mine, state, strict, "EMA");
}

void Ema::copy_to(torch::nn::Module& module) const {
  // Strict: a difference throws, so there is nothing to report.
  (void)load_module_state(module, state(SnapshotMode::Borrow), /*strict=*/true);
}

}  // namespace ckptio::libtorch
