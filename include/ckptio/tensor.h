// Tensor and TensorView: typed, shaped, contiguous bytes, and who keeps them alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ckptio/dtype.h"

namespace ckptio {

using Shape = std::vector<int64_t>;

// Number of elements of a shape; rank 0 is 1 element, any 0 dimension gives 0. Throws
// Error(InvalidArgument) for a negative dimension and Error(Corrupt) on uint64 overflow.
uint64_t shape_numel(std::span<const int64_t> shape);
// Bytes a contiguous tensor of this dtype and shape occupies, with overflow checks. Throws
// Error(Corrupt) when the bit count is not a whole number of bytes (e.g. three F4 elements).
uint64_t tensor_nbytes(DType dtype, std::span<const int64_t> shape);
// "[2, 3]"
std::string shape_to_string(std::span<const int64_t> shape);

// A non-owning view: what writers take. The bytes must outlive every use of the view.
struct TensorView {
  DType dtype = DType::F32;
  Shape shape;
  std::span<const std::byte> bytes;

  uint64_t numel() const { return shape_numel(shape); }
  uint64_t nbytes() const { return bytes.size(); }
};

// A tensor whose bytes are kept alive by the tensor itself (a heap buffer or a file mapping) or,
// for borrowed memory, by the caller. Copying a Tensor shares the bytes (like a shared_ptr).
class Tensor {
 public:
  enum class Storage : uint8_t { Heap, Mapped, Borrowed };

  Tensor() = default;

  // A new zero-initialised heap tensor.
  static Tensor zeros(DType dtype, Shape shape);
  // A new heap tensor with unspecified contents, for callers that overwrite every byte (readers):
  // it skips the zeroing pass, which costs as much as reading from the page cache.
  static Tensor empty(DType dtype, Shape shape);
  // A heap tensor holding a copy of `bytes` (size must equal tensor_nbytes(dtype, shape)).
  static Tensor copy_of(DType dtype, Shape shape, std::span<const std::byte> bytes);
  // A tensor over memory the caller owns and keeps alive and unchanged while in use.
  static Tensor borrow(DType dtype, Shape shape, std::span<std::byte> bytes);
  // A tensor whose bytes live inside an object `owner` keeps alive (e.g. a memory-mapped file).
  // The bytes are read-only.
  static Tensor from_owner(DType dtype, Shape shape, std::span<const std::byte> bytes,
                           std::shared_ptr<const void> owner, Storage storage);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  uint64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_; }
  Storage storage() const { return storage_; }

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  // Writable bytes; throws Error(InvalidArgument) for a read-only (mapped) tensor.
  std::span<std::byte> mutable_bytes();
  TensorView view() const { return TensorView{dtype_, shape_, bytes()}; }

  // A heap copy (always owned and writable).
  Tensor clone() const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  bool writable_ = false;
  Storage storage_ = Storage::Heap;
  std::shared_ptr<const void> owner_;
};

}  // namespace ckptio
