// Distributed checkpoints loaded into another dtype: the elements are converted as they are read
// (dist::LoadItem::load_as, the parallel reader's per-chunk conversion), and must be exactly what
// converting after a plain load gives, for whole tensors (CheckpointReader, load_checkpoint's
// path) and for the boxes and padded flat ranges a rank asks for.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <vector>

#include "ckptio/communicator.h"
#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/load.h"
#include "load/converted_reads.h"
#include "support/expect_error.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using dist::ShardedTensor;

using testing::converted;
using testing::expect_error;

// Random bit patterns: NaNs, infinities, subnormals and values that round all come up.
std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xFF);
  return out;
}

struct Saved {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<std::byte> bytes;
};

// Saved by one process in several pieces per tensor, so that reads cross chunks and files.
std::vector<Saved> save_checkpoint(const fs::path& dir) {
  std::vector<Saved> tensors{
      {"w", DType::BF16, {9, 7}, {}},
      {"v", DType::F32, {5, 4}, {}},
      {"s", DType::F16, {}, {}},
      {"i", DType::I32, {6}, {}},
  };
  for (size_t k = 0; k < tensors.size(); ++k) {
    tensors[k].bytes = random_bytes(tensor_nbytes(tensors[k].dtype, tensors[k].shape), 11 + k);
  }
  const size_t bf = 2, f = 4;
  const std::span<const std::byte> w = tensors[0].bytes, v = tensors[1].bytes;
  // w: rows 0..3 whole, then rows 4..8 as two column blocks (copied out row by row).
  std::vector<std::byte> left, right;
  for (int64_t r = 4; r < 9; ++r) {
    const auto row = w.subspan(static_cast<size_t>(r) * 7 * bf, 7 * bf);
    left.insert(left.end(), row.begin(), row.begin() + 3 * bf);
    right.insert(right.end(), row.begin() + 3 * bf, row.end());
  }
  const std::vector<dist::SaveItem> items{
      {ShardedTensor::block("w", DType::BF16, {9, 7}, {0, 0}, {4, 7}), w.first(4 * 7 * bf)},
      {ShardedTensor::block("w", DType::BF16, {9, 7}, {4, 0}, {5, 3}), left},
      {ShardedTensor::block("w", DType::BF16, {9, 7}, {4, 3}, {5, 4}), right},
      {ShardedTensor::flat("v", DType::F32, {5, 4}, 0, 7), v.first(7 * f)},
      {ShardedTensor::flat("v", DType::F32, {5, 4}, 7, 13), v.subspan(7 * f)},
      {ShardedTensor::replicated("s", DType::F16, {}), tensors[2].bytes},
      {ShardedTensor::replicated("i", DType::I32, {6}), tensors[3].bytes},
  };
  dist::SaveOptions o;
  o.sync = false;
  auto comm = dist::single_process_communicator();
  dist::save(*comm, dir, items, o);
  return tensors;
}

TEST(DistConvert, CheckpointReaderConvertsAsItReadsExactlyAsAfterAPlainLoad) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  const std::vector<Saved> saved = save_checkpoint(dir);
  const CheckpointReader reader = CheckpointReader::open(dir);
  ASSERT_EQ(reader.source().kind, SourceKind::DistributedFolder);
  testing::expect_converting_reads_match_plain_loads(
      reader, {{"w", DType::F32}, {"w", DType::F8_E4M3}, {"v", DType::BF16}, {"v", DType::F64},
               {"s", DType::F32}, {"i", DType::I32}},
      2);
  // The plain load itself is what was saved.
  for (const Saved& s : saved) {
    const Tensor t = reader.tensor(s.name);
    EXPECT_TRUE(std::equal(s.bytes.begin(), s.bytes.end(), t.bytes().begin(), t.bytes().end())) << s.name;
  }
}

TEST(DistConvert, BoxesAndPaddedFlatRangesConvertAsTheyAreRead) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  save_checkpoint(dir);
  const dist::Reader reader = dist::Reader::open(dir);
  // A box across all three pieces of w, and a flat range of v across both pieces, padded past
  // the end (as ZeRO pads): the same items read as stored, then converted, must match.
  const std::vector<ShardedTensor> asks{
      ShardedTensor::block("w", DType::BF16, {9, 7}, {2, 1}, {5, 5}),
      ShardedTensor::flat("v", DType::F32, {5, 4}, 5, 19),
  };
  for (const ShardedTensor& ask : asks) {
    for (DType to : {DType::F32, DType::F64, DType::F16}) {
      std::vector<std::byte> stored(ask.local_nbytes());
      const dist::LoadItem plain{ask, stored};
      reader.read(std::span(&plain, 1));
      const uint64_t n = stored.size() * 8 / dtype_bits(ask.dtype);
      std::vector<std::byte> direct(static_cast<size_t>(n * dtype_bits(to) / 8), std::byte{0xAB});
      const dist::LoadItem as{ask, direct, to};
      const dist::LoadReport report = reader.read(std::span(&as, 1));
      EXPECT_EQ(direct, converted(ask.dtype, stored, to, n)) << ask.name << " as " << dtype_name(to);
      EXPECT_GT(report.bytes_read, 0u);
    }
  }
}

TEST(DistConvert, ImpossibleConversionsAndWrongSizesAreRefused) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  save_checkpoint(dir);
  const dist::Reader reader = dist::Reader::open(dir);
  const ShardedTensor w = ShardedTensor::replicated("w", DType::BF16, {9, 7});
  std::vector<std::byte> ints(63 * 4);
  const dist::LoadItem to_int{w, ints, DType::I32};
  expect_error([&] { reader.read(std::span(&to_int, 1)); }, ErrorCode::Mismatch);
  std::vector<std::byte> bf16_sized(63 * 2);  // the stored size, not the F32 one
  const dist::LoadItem wrong{w, bf16_sized, DType::F32};
  expect_error([&] { reader.read(std::span(&wrong, 1)); }, ErrorCode::InvalidArgument);
}

}  // namespace
}  // namespace ckptio
