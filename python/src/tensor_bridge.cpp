#include "tensor_bridge.h"

#include <optional>

#include "ckptio/error.h"

namespace nb = nanobind;

namespace ckptio::python {

TensorView view_of(const std::string& name, const std::string& dtype, const Shape& shape,
                   const RawIn& raw) {
  std::optional<DType> parsed = parse_dtype(dtype);
  if (!parsed) {
    throw Error(ErrorCode::InvalidArgument,
                "tensor '" + name + "': unknown safetensors dtype '" + dtype + "'");
  }
  uint64_t expected = tensor_nbytes(*parsed, shape);
  if (expected != raw.size()) {
    throw Error(ErrorCode::InvalidArgument,
                "tensor '" + name + "': " + std::to_string(raw.size()) + " bytes given for " +
                    dtype + " " + shape_to_string(shape) + ", which needs " +
                    std::to_string(expected));
  }
  return TensorView{*parsed, shape,
                    std::span<const std::byte>(reinterpret_cast<const std::byte*>(raw.data()),
                                               static_cast<size_t>(raw.size()))};
}

nb::object raw_of(const Tensor& tensor) {
  // numpy wants a valid pointer even for zero bytes.
  static uint8_t empty_byte = 0;
  auto* keep = new Tensor(tensor);
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  size_t size = tensor.nbytes();
  auto* data = size == 0 ? &empty_byte
                         : reinterpret_cast<uint8_t*>(const_cast<std::byte*>(tensor.bytes().data()));
  if (tensor.storage() == Tensor::Storage::Mapped) {
    // A read-only mapping: numpy must refuse writes instead of the process faulting.
    return RawOutReadOnly(static_cast<const uint8_t*>(data), {size}, owner).cast();
  }
  return RawOut(data, {size}, owner).cast();
}

}  // namespace ckptio::python
