// Tensor and TensorView: sizes, ownership, sharing, cloning, borrowing and read-only mappings.
#include "ckptio/tensor.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

#include "ckptio/error.h"

namespace ckptio {
namespace {

template <typename F>
ErrorCode code_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no ckptio::Error thrown";
  return ErrorCode::Internal;
}

TEST(Shape, NumelRankZeroZeroSizeAndErrors) {
  EXPECT_EQ(shape_numel(Shape{}), 1u);
  EXPECT_EQ(shape_numel(Shape{2, 3, 4}), 24u);
  EXPECT_EQ(shape_numel(Shape{5, 0, 7}), 0u);
  EXPECT_EQ(shape_numel(Shape{0, std::numeric_limits<int64_t>::max()}), 0u);
  EXPECT_EQ(code_of([] { shape_numel(Shape{2, -1}); }), ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of([] { shape_numel(Shape{4294967296, 4294967296}); }), ErrorCode::Corrupt);
  EXPECT_EQ(code_of([] { shape_numel(Shape{4194305, 4194305, 211106198978564}); }),
            ErrorCode::Corrupt);
  EXPECT_EQ(shape_to_string(Shape{}), "[]");
  EXPECT_EQ(shape_to_string(Shape{2, 3}), "[2, 3]");
}

TEST(Shape, NbytesWithSubByteTypesAndOverflow) {
  EXPECT_EQ(tensor_nbytes(DType::F32, Shape{2, 3}), 24u);
  EXPECT_EQ(tensor_nbytes(DType::C64, Shape{3}), 24u);
  EXPECT_EQ(tensor_nbytes(DType::F64, Shape{}), 8u);
  EXPECT_EQ(tensor_nbytes(DType::F4, Shape{2}), 1u);
  EXPECT_EQ(tensor_nbytes(DType::F6_E2M3, Shape{4}), 3u);
  EXPECT_EQ(tensor_nbytes(DType::F4, Shape{0}), 0u);
  EXPECT_EQ(code_of([] { tensor_nbytes(DType::F4, Shape{3}); }), ErrorCode::Corrupt);
  EXPECT_EQ(code_of([] { tensor_nbytes(DType::F6_E3M2, Shape{2, 3}); }), ErrorCode::Corrupt);
  // numel fits in 64 bits, numel * 32 bits does not.
  EXPECT_EQ(code_of([] { tensor_nbytes(DType::F32, Shape{int64_t{1} << 60}); }),
            ErrorCode::Corrupt);
}

std::vector<std::byte> iota_bytes(size_t n) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 7 + 1);
  return v;
}

TEST(Tensor, ZerosIsOwnedWritableAndZero) {
  Tensor t = Tensor::zeros(DType::BF16, {3, 5});
  EXPECT_EQ(t.storage(), Tensor::Storage::Heap);
  EXPECT_EQ(t.dtype(), DType::BF16);
  EXPECT_EQ(t.shape(), (Shape{3, 5}));
  EXPECT_EQ(t.numel(), 15u);
  ASSERT_EQ(t.nbytes(), 30u);
  for (std::byte b : t.bytes()) EXPECT_EQ(b, std::byte{0});
  t.mutable_bytes()[29] = std::byte{0xAB};
  EXPECT_EQ(t.bytes()[29], std::byte{0xAB});
}

TEST(Tensor, RankZeroAndZeroSize) {
  Tensor scalar = Tensor::zeros(DType::F64, {});
  EXPECT_EQ(scalar.numel(), 1u);
  EXPECT_EQ(scalar.nbytes(), 8u);
  Tensor empty = Tensor::zeros(DType::F32, {4, 0});
  EXPECT_EQ(empty.numel(), 0u);
  EXPECT_EQ(empty.nbytes(), 0u);
  EXPECT_TRUE(empty.bytes().empty());
  Tensor empty_copy = empty.clone();
  EXPECT_EQ(empty_copy.shape(), (Shape{4, 0}));
  EXPECT_EQ(empty_copy.nbytes(), 0u);
}

TEST(Tensor, CopyOfCopiesAndChecksTheSize) {
  auto src = iota_bytes(24);
  Tensor t = Tensor::copy_of(DType::I32, {2, 3}, src);
  EXPECT_EQ(t.storage(), Tensor::Storage::Heap);
  ASSERT_EQ(t.nbytes(), 24u);
  EXPECT_NE(t.bytes().data(), src.data());
  EXPECT_EQ(std::memcmp(t.bytes().data(), src.data(), 24), 0);
  src[0] = std::byte{0xFF};
  EXPECT_NE(t.bytes()[0], std::byte{0xFF});
  EXPECT_EQ(code_of([&] { Tensor::copy_of(DType::I32, {2, 3}, std::span(src).first(20)); }),
            ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of([&] { Tensor::copy_of(DType::I32, {2, -3}, src); }),
            ErrorCode::InvalidArgument);
}

TEST(Tensor, CopiesShareBytesAndCloneDoesNot) {
  Tensor a = Tensor::copy_of(DType::U8, {4}, iota_bytes(4));
  Tensor shared = a;
  EXPECT_EQ(shared.bytes().data(), a.bytes().data());
  a.mutable_bytes()[0] = std::byte{42};
  EXPECT_EQ(shared.bytes()[0], std::byte{42});

  Tensor c = a.clone();
  EXPECT_EQ(c.storage(), Tensor::Storage::Heap);
  EXPECT_NE(c.bytes().data(), a.bytes().data());
  EXPECT_EQ(std::memcmp(c.bytes().data(), a.bytes().data(), 4), 0);
  c.mutable_bytes()[1] = std::byte{99};
  EXPECT_NE(a.bytes()[1], std::byte{99});
  EXPECT_EQ(c.dtype(), a.dtype());
  EXPECT_EQ(c.shape(), a.shape());
}

TEST(Tensor, SharedBytesOutliveTheOriginal) {
  Tensor survivor;
  {
    Tensor a = Tensor::copy_of(DType::U8, {3}, iota_bytes(3));
    survivor = a;
  }
  // Under ASan a dangling buffer would be reported here.
  EXPECT_EQ(survivor.bytes()[2], std::byte{15});
}

TEST(Tensor, BorrowAliasesCallerMemory) {
  auto mem = iota_bytes(8);
  Tensor t = Tensor::borrow(DType::F16, {2, 2}, mem);
  EXPECT_EQ(t.storage(), Tensor::Storage::Borrowed);
  EXPECT_EQ(t.bytes().data(), mem.data());
  t.mutable_bytes()[3] = std::byte{0x5A};
  EXPECT_EQ(mem[3], std::byte{0x5A});
  mem[4] = std::byte{0x66};
  EXPECT_EQ(t.bytes()[4], std::byte{0x66});
  Tensor c = t.clone();
  EXPECT_EQ(c.storage(), Tensor::Storage::Heap);
  EXPECT_NE(c.bytes().data(), mem.data());
  EXPECT_EQ(code_of([&] { Tensor::borrow(DType::F16, {2, 2}, std::span(mem).first(7)); }),
            ErrorCode::InvalidArgument);
}

TEST(Tensor, MappedIsReadOnlyAndKeepsItsOwnerAlive) {
  auto alive = std::make_shared<bool>(true);
  auto buffer = std::make_shared<std::vector<std::byte>>(iota_bytes(16));
  Tensor t;
  {
    // Stands in for a file mapping: its deleter marks it dead.
    std::shared_ptr<const void> owner(new int(0), [alive](const int* p) {
      *alive = false;
      delete p;
    });
    t = Tensor::from_owner(DType::F32, {4}, *buffer, owner, Tensor::Storage::Mapped);
  }
  EXPECT_TRUE(*alive) << "the tensor let its owner die";
  EXPECT_EQ(t.storage(), Tensor::Storage::Mapped);
  EXPECT_EQ(t.bytes().data(), buffer->data());
  EXPECT_EQ(code_of([&] { t.mutable_bytes(); }), ErrorCode::InvalidArgument);
  const TensorView v = t.view();
  EXPECT_EQ(v.dtype, DType::F32);
  EXPECT_EQ(v.shape, (Shape{4}));
  EXPECT_EQ(v.bytes.data(), buffer->data());
  EXPECT_EQ(v.nbytes(), 16u);
  EXPECT_EQ(v.numel(), 4u);

  Tensor writable = t.clone();
  EXPECT_EQ(writable.storage(), Tensor::Storage::Heap);
  writable.mutable_bytes()[5] = std::byte{0xEE};
  EXPECT_NE((*buffer)[5], std::byte{0xEE});

  Tensor copy = t;
  t = Tensor();
  EXPECT_TRUE(*alive);
  copy = Tensor();
  EXPECT_FALSE(*alive) << "the owner outlived every tensor that used it";
}

TEST(Tensor, FromOwnerChecksTheSize) {
  auto buffer = std::make_shared<std::vector<std::byte>>(iota_bytes(10));
  EXPECT_EQ(code_of([&] {
              Tensor::from_owner(DType::F32, {3}, *buffer, buffer, Tensor::Storage::Mapped);
            }),
            ErrorCode::InvalidArgument);
}

}  // namespace
}  // namespace ckptio
