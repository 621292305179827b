#include "ckptio/tensor.h"

#include <cstring>

#include "ckptio/error.h"

namespace ckptio {

uint64_t shape_numel(std::span<const int64_t> shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      throw Error(ErrorCode::InvalidArgument, "negative dimension in shape " + shape_to_string(shape));
    }
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) {
      throw Error(ErrorCode::Corrupt, "element count of shape " + shape_to_string(shape) +
                                          " overflows 64 bits");
    }
  }
  return n;
}

uint64_t tensor_nbytes(DType dtype, std::span<const int64_t> shape) {
  uint64_t bits;
  if (__builtin_mul_overflow(shape_numel(shape), static_cast<uint64_t>(dtype_bits(dtype)), &bits)) {
    throw Error(ErrorCode::Corrupt, "byte size of " + std::string(dtype_name(dtype)) + " tensor " +
                                        shape_to_string(shape) + " overflows 64 bits");
  }
  if (bits % 8 != 0) {
    throw Error(ErrorCode::Corrupt, std::string(dtype_name(dtype)) + " tensor " +
                                        shape_to_string(shape) +
                                        " does not fill a whole number of bytes");
  }
  return bits / 8;
}

std::string shape_to_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {
void check_size(DType dtype, const Shape& shape, size_t size) {
  const uint64_t want = tensor_nbytes(dtype, shape);
  if (want != size) {
    throw Error(ErrorCode::InvalidArgument,
                std::string(dtype_name(dtype)) + " tensor " + shape_to_string(shape) + " needs " +
                    std::to_string(want) + " bytes, got " + std::to_string(size));
  }
}
}  // namespace

namespace {
Tensor heap_tensor(DType dtype, Shape shape, bool zeroed);
}

Tensor Tensor::zeros(DType dtype, Shape shape) { return heap_tensor(dtype, std::move(shape), true); }
Tensor Tensor::empty(DType dtype, Shape shape) { return heap_tensor(dtype, std::move(shape), false); }

namespace {
Tensor heap_tensor(DType dtype, Shape shape, bool zeroed) {
  const uint64_t n = tensor_nbytes(dtype, shape);
  const size_t alloc = n == 0 ? 1 : static_cast<size_t>(n);
  std::shared_ptr<std::byte[]> buf(zeroed ? new std::byte[alloc]() : new std::byte[alloc]);
  return Tensor::from_owner(dtype, std::move(shape), {buf.get(), static_cast<size_t>(n)}, buf,
                            Tensor::Storage::Heap);
}
}  // namespace

Tensor Tensor::copy_of(DType dtype, Shape shape, std::span<const std::byte> bytes) {
  check_size(dtype, shape, bytes.size());
  const uint64_t n = bytes.size();
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  std::shared_ptr<std::byte[]> buf(new std::byte[n == 0 ? 1 : n]);
  if (n) std::memcpy(buf.get(), bytes.data(), n);
  t.data_ = buf.get();
  t.size_ = n;
  t.writable_ = true;
  t.storage_ = Storage::Heap;
  t.owner_ = std::move(buf);
  return t;
}

Tensor Tensor::borrow(DType dtype, Shape shape, std::span<std::byte> bytes) {
  check_size(dtype, shape, bytes.size());
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = bytes.data();
  t.size_ = bytes.size();
  t.writable_ = true;
  t.storage_ = Storage::Borrowed;
  return t;
}

Tensor Tensor::from_owner(DType dtype, Shape shape, std::span<const std::byte> bytes,
                          std::shared_ptr<const void> owner, Storage storage) {
  check_size(dtype, shape, bytes.size());
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = const_cast<std::byte*>(bytes.data());
  t.size_ = bytes.size();
  t.writable_ = storage == Storage::Heap;
  t.storage_ = storage;
  t.owner_ = std::move(owner);
  return t;
}

std::span<std::byte> Tensor::mutable_bytes() {
  if (!writable_) {
    throw Error(ErrorCode::InvalidArgument, "tensor is read-only (memory-mapped); clone() it first");
  }
  return {data_, size_};
}

Tensor Tensor::clone() const { return copy_of(dtype_, shape_, bytes()); }

}  // namespace ckptio
