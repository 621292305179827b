// A rank's report as it travels to rank 0: what goes in comes out, and a damaged one is an
// Error(Internal), never a read past its end or an allocation it does not hold.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>

#include "ckptio/error.h"
#include "dist/plan.h"

namespace ckptio::dist::detail {
namespace {

RankReport report_sample() {
  RankReport r;
  r.files.push_back({"shard-00002-model-00001-of-00002.safetensors", uint64_t{5} << 40, std::string(32, 'c')});
  r.files.push_back({"shard-00002-model-00002-of-00002.safetensors", 1, ""});
  r.tensors.push_back({"model.w", DType::BF16, {4096, 1024}});
  r.tensors.push_back({"step", DType::I64, {}});
  r.tensors.push_back({"n\xC3\xA4me \"quoted\"", DType::F8_E4M3, {0, 3}});
  r.chunks.push_back({0, 0, Box{{1024, 0}, {1024, 1024}}, 300, 300 + 2 * 1024 * 1024});
  r.chunks.push_back({0, 1, Box{{2048, 5}, {1, 1019}}, 8, 8 + 2 * 1019});
  r.chunks.push_back({1, 1, Box{{}, {}}, uint64_t{1} << 63, (uint64_t{1} << 63) + 8});
  return r;
}

void expect_same_report(const RankReport& a, const RankReport& b) {
  ASSERT_EQ(a.files.size(), b.files.size());
  for (size_t i = 0; i < a.files.size(); ++i) {
    EXPECT_EQ(a.files[i].name, b.files[i].name);
    EXPECT_EQ(a.files[i].size, b.files[i].size);
    EXPECT_EQ(a.files[i].xxh3_128, b.files[i].xxh3_128);
  }
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].name, b.tensors[i].name);
    EXPECT_EQ(a.tensors[i].dtype, b.tensors[i].dtype);
    EXPECT_EQ(a.tensors[i].shape, b.tensors[i].shape);
  }
  ASSERT_EQ(a.chunks.size(), b.chunks.size());
  for (size_t i = 0; i < a.chunks.size(); ++i) {
    EXPECT_EQ(a.chunks[i].tensor, b.chunks[i].tensor);
    EXPECT_EQ(a.chunks[i].file, b.chunks[i].file);
    EXPECT_EQ(a.chunks[i].box.offsets, b.chunks[i].box.offsets);
    EXPECT_EQ(a.chunks[i].box.shape, b.chunks[i].box.shape);
    EXPECT_EQ(a.chunks[i].begin, b.chunks[i].begin);
    EXPECT_EQ(a.chunks[i].end, b.chunks[i].end);
  }
}

// The code report_from_bytes throws; nullopt when it reads the bytes.
std::optional<ErrorCode> report_error(std::string_view bytes) {
  try {
    (void)report_from_bytes(bytes);
  } catch (const Error& e) {
    return e.code();
  }
  return std::nullopt;
}

TEST(DistReport, WhatARankReportsIsWhatRankZeroReads) {
  expect_same_report(report_from_bytes(report_to_bytes(report_sample())), report_sample());
  expect_same_report(report_from_bytes(report_to_bytes(RankReport{})), RankReport{});
}

TEST(DistReport, EveryTruncationAndTrailingByteIsAnInternalError) {
  const std::string bytes = report_to_bytes(report_sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(report_error(std::string_view(bytes).substr(0, n)), ErrorCode::Internal) << n;
  }
  EXPECT_EQ(report_error(bytes + '\0'), ErrorCode::Internal);
}

TEST(DistReport, EveryFlippedByteIsReadWithinBoundsOrRefused) {
  // A flipped byte may still decode (a different size, a different name); what it must never do
  // is read outside the buffer (ASan), hang, or allocate for a count the bytes cannot hold.
  const std::string bytes = report_to_bytes(report_sample());
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (const unsigned char flip : {0x01, 0x80, 0xff}) {
      std::string damaged = bytes;
      damaged[i] = static_cast<char>(static_cast<unsigned char>(damaged[i]) ^ flip);
      try {
        (void)report_from_bytes(damaged);
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::Internal) << i << ": " << e.what();
      }
    }
  }
  // A count of 2^63 tensors in a few bytes.
  std::string huge = report_to_bytes(RankReport{});
  huge.resize(huge.size() - 2);  // drop the tensor and chunk counts (0, 0)
  huge += std::string("\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 9);
  EXPECT_EQ(report_error(huge), ErrorCode::Internal);
  // An integer whose tenth byte carries bits past the 64th is refused, not wrapped: here the
  // file count 2^64 would read as 0 and the report as an empty one.
  std::string overlong = report_to_bytes(RankReport{});
  overlong.replace(overlong.size() - 3, 1, std::string("\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02", 10));
  EXPECT_EQ(report_error(overlong), ErrorCode::Internal);
}

TEST(DistReport, AChunkNamingATensorOrFileNotListedIsRefused) {
  RankReport r = report_sample();
  r.chunks[1].file = 2;
  EXPECT_EQ(report_error(report_to_bytes(r)), ErrorCode::Internal);
  r = report_sample();
  r.chunks[0].tensor = 3;
  EXPECT_EQ(report_error(report_to_bytes(r)), ErrorCode::Internal);
}

}  // namespace
}  // namespace ckptio::dist::detail
