// The writer's byte layout, against bytes computed by hand from the reference implementation's
// rules: tensors by descending dtype (reference order) then by name, compact JSON with
// "__metadata__" first and entries in data order, keys dtype/shape/data_offsets, space padding to
// a multiple of 8.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ckptio/safetensors.h"
#include "format/safetensors/safetensors_test_util.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::as_byte_span;
using testing::capture_error;
using testing::le64;
using testing::TempDir;

std::span<const std::byte> bytes_of(const std::string& s) { return as_byte_span(s); }

TEST(SafetensorsLayout, MixedDTypesByHand) {
  const std::string a_data("\x01\x02\x03\x04", 4);
  const std::string b_data("\x11\x12\x13\x14\x15\x16\x17\x18", 8);
  const std::string c_data("\x21\x22\x23\x24\x25\x26\x27\x28", 8);
  const std::string d_data("\x31\x32\x33", 3);
  // Given out of order on purpose.
  const std::vector<NamedTensor> tensors = {
      {"b", {DType::F32, {2}, bytes_of(b_data)}},
      {"d", {DType::U8, {3}, bytes_of(d_data)}},
      {"a", {DType::F32, {1}, bytes_of(a_data)}},
      {"c", {DType::I64, {}, bytes_of(c_data)}},
  };
  // I64 sorts above F32, which sorts above U8; equal dtypes by name. 247 bytes + 1 space.
  const std::string json =
      R"({"__metadata__":{"format":"pt"},)"
      R"("c":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},)"
      R"("d":{"dtype":"U8","shape":[3],"data_offsets":[20,23]}} )";
  ASSERT_EQ(json.size(), 248u);
  const std::string expected = std::string("\xF8\0\0\0\0\0\0\0", 8) + json + c_data + a_data +
                               b_data + d_data;
  EXPECT_EQ(serialize_safetensors(tensors), expected);

  const SafetensorsLayout layout = plan_safetensors(tensors);
  EXPECT_EQ(layout.header, expected.substr(0, 8 + 248));
  EXPECT_EQ(layout.file_size, expected.size());
  EXPECT_EQ(layout.order, (std::vector<size_t>{3, 2, 0, 1}));
  ASSERT_EQ(layout.entries.size(), 4u);
  EXPECT_EQ(layout.entries[2].name, "b");
  EXPECT_EQ(layout.entries[2].begin, 12u);
  EXPECT_EQ(layout.entries[2].end, 20u);

  TempDir dir;
  save_safetensors(dir / "m.safetensors", tensors);
  EXPECT_EQ(testing::read_file(dir / "m.safetensors"), expected);
}

TEST(SafetensorsLayout, MetadataVariantsAndPadding) {
  const std::vector<NamedTensor> none;
  EXPECT_EQ(serialize_safetensors(none), le64(32) + R"({"__metadata__":{"format":"pt"}})");
  SafetensorsWriteOptions omit;
  omit.omit_metadata = true;
  EXPECT_EQ(serialize_safetensors(none, omit), le64(8) + "{}      ");
  SafetensorsWriteOptions empty;
  empty.metadata = Metadata{};
  EXPECT_EQ(serialize_safetensors(none, empty), le64(24) + R"({"__metadata__":{}}     )");
  SafetensorsWriteOptions custom;
  custom.metadata = Metadata{{"z", "1"}, {"a", "x y"}};  // written sorted by key
  EXPECT_EQ(serialize_safetensors(none, custom),
            le64(40) + R"({"__metadata__":{"a":"x y","z":"1"}}    )");
}

TEST(SafetensorsLayout, StringEscapingLikeSerdeJson) {
  // serde_json escapes " and \ and control characters (\n, \t, ... and \u00XX in lower-case hex),
  // and writes other code points, non-ASCII included, as raw UTF-8.
  const std::string data(2, '\0');
  const std::vector<NamedTensor> tensors = {
      {std::string("q\"b\\s\n\t\x01") + "\xC3\xA9/\x7F", {DType::BF16, {1}, bytes_of(data)}}};
  SafetensorsWriteOptions omit;
  omit.omit_metadata = true;
  const std::string json = "{\"q\\\"b\\\\s\\n\\t\\u0001\xC3\xA9/\x7F\":"
                           R"({"dtype":"BF16","shape":[1],"data_offsets":[0,2]}})";
  const std::string padded = json + std::string((8 - json.size() % 8) % 8, ' ');
  EXPECT_EQ(serialize_safetensors(tensors, omit), le64(padded.size()) + padded + data);
}

TEST(SafetensorsLayout, NamesSortByBytesWithinADType) {
  const std::string data(4, '\0');
  std::vector<NamedTensor> tensors;
  for (const char* name : {"a.2", "a.10", "B", "b", "a"}) {
    tensors.push_back({name, {DType::F32, {1}, bytes_of(data)}});
  }
  const SafetensorsLayout layout = plan_safetensors(tensors);
  std::vector<std::string> order;
  for (const auto& e : layout.entries) order.push_back(e.name);
  EXPECT_EQ(order, (std::vector<std::string>{"B", "a", "a.10", "a.2", "b"}));
}

TEST(SafetensorsLayout, EveryDTypeInDescendingReferenceOrder) {
  std::vector<std::string> storage;
  std::vector<NamedTensor> tensors;
  storage.reserve(kDTypeCount);
  for (int i = 0; i < kDTypeCount; ++i) {
    const DType d = static_cast<DType>(i);
    const Shape shape = dtype_bits(d) % 8 == 0 ? Shape{1} : Shape{4};  // F4/F6: whole bytes
    storage.emplace_back(tensor_nbytes(d, shape), static_cast<char>(i));
    // Names in the opposite order, so that only the dtype can explain the result.
    tensors.push_back({std::string(1, static_cast<char>('a' + i)), {d, shape, bytes_of(storage.back())}});
  }
  const SafetensorsLayout layout = plan_safetensors(tensors);
  ASSERT_EQ(layout.entries.size(), static_cast<size_t>(kDTypeCount));
  const char* expected[] = {"U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16",
                            "F16", "U16", "I16", "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0",
                            "F8_E4M3", "F8_E5M2", "I8", "U8", "F6_E3M2", "F6_E2M3", "F4", "BOOL"};
  uint64_t offset = 0;
  for (size_t i = 0; i < layout.entries.size(); ++i) {
    EXPECT_EQ(dtype_name(layout.entries[i].dtype), expected[i]) << i;
    EXPECT_EQ(layout.entries[i].begin, offset);
    offset = layout.entries[i].end;
  }
  EXPECT_EQ(layout.file_size, layout.header.size() + offset);
  EXPECT_EQ(layout.header.size() % 8, 0u);
  // The padding is spaces and only spaces, fewer than 8, right before the data.
  const std::string json = layout.header.substr(8);
  const size_t close = json.rfind('}');
  EXPECT_EQ(json.find_first_not_of(' ', close + 1), std::string::npos);
  EXPECT_LT(json.size() - close - 1, 8u);
}

TEST(SafetensorsLayout, ZeroSizeTensorsTakeTheirPlaceInOrder) {
  const std::string four(4, '\x7');
  const std::vector<NamedTensor> tensors = {
      {"w", {DType::F32, {1}, bytes_of(four)}},
      {"e", {DType::F32, {0, 3}, {}}},
      {"z", {DType::F32, {2, 0}, {}}},
  };
  const SafetensorsLayout layout = plan_safetensors(tensors);
  ASSERT_EQ(layout.entries.size(), 3u);
  EXPECT_EQ(layout.entries[0].name, "e");
  EXPECT_EQ(layout.entries[0].begin, 0u);
  EXPECT_EQ(layout.entries[0].end, 0u);
  EXPECT_EQ(layout.entries[1].name, "w");
  EXPECT_EQ(layout.entries[1].begin, 0u);
  EXPECT_EQ(layout.entries[2].name, "z");
  EXPECT_EQ(layout.entries[2].begin, 4u);
  EXPECT_EQ(layout.entries[2].end, 4u);
  // What the writer produces, the reader accepts.
  const std::string file = serialize_safetensors(tensors);
  const SafetensorsHeader h = parse_safetensors(as_byte_span(file), "zero-size");
  EXPECT_EQ(h.tensors.size(), 3u);
}

TEST(SafetensorsLayout, WriterRefusesReservedAndDuplicateNamesAndBadSizes) {
  const std::string four(4, '\0');
  TempDir dir;
  const fs::path path = dir / "out.safetensors";
  testing::write_file(path, "previous contents");
  auto refused = [&](const std::vector<NamedTensor>& tensors) {
    const auto serialize = capture_error([&] { serialize_safetensors(tensors); });
    const auto save = capture_error([&] { save_safetensors(path, tensors); });
    EXPECT_TRUE(serialize.threw && save.threw);
    EXPECT_EQ(serialize.code, ErrorCode::InvalidArgument) << serialize.message;
    EXPECT_EQ(save.code, ErrorCode::InvalidArgument) << save.message;
    EXPECT_EQ(testing::read_file(path), "previous contents");
    EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1)
        << "a refused write left a file behind";
    return save.message;
  };
  const std::string m1 = refused({{"__metadata__", {DType::F32, {1}, bytes_of(four)}}});
  EXPECT_NE(m1.find("__metadata__"), std::string::npos) << m1;
  const std::string m2 = refused({{"w", {DType::F32, {1}, bytes_of(four)}},
                                  {"w", {DType::I32, {1}, bytes_of(four)}}});
  EXPECT_NE(m2.find("\"w\""), std::string::npos) << m2;
  refused({{"w", {DType::F32, {2}, bytes_of(four)}}});  // 4 bytes for 8
  refused({{"w", {DType::F32, {-1}, {}}}});             // negative dimension
}

// A caller's shape that is not a whole number of bytes is the caller's mistake, not a corrupt
// file: plan_safetensors documents InvalidArgument for it.
TEST(SafetensorsLayout, WriterRefusesPartialByteShapesAsInvalidArgument) {
  const std::string one(1, '\0');
  const std::vector<NamedTensor> f4_three = {{"w", {DType::F4, {3}, bytes_of(one)}}};
  const auto thrown = capture_error([&] { plan_safetensors(f4_three); });
  EXPECT_TRUE(thrown.threw);
  EXPECT_EQ(thrown.code, ErrorCode::InvalidArgument) << thrown.message;
}

}  // namespace
}  // namespace ckptio
