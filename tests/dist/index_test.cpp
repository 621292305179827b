// Hostile global indexes: every malformation is a typed error, never a crash.
#include <gtest/gtest.h>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/load.h"
#include "support/test_util.h"

namespace ckptio::dist {
namespace {

// A valid index: w is F32 [4, 2] in two row chunks in one 72-byte file.
std::string index_with(const std::string& chunks, const std::string& shape = "[4, 2]",
                       const std::string& files = R"([{"name": "a.safetensors", "rank": 0, "size": 72}])") {
  return R"({"format": "ckptio.distributed", "version": 1, "world_size": 1, "files": )" + files +
         R"(, "tensors": {"w": {"dtype": "F32", "shape": )" + shape + R"(, "chunks": [)" + chunks +
         "]}}}";
}
const std::string kTop = R"({"file": 0, "offsets": [0, 0], "shape": [2, 2], "data_offsets": [8, 24]})";
const std::string kBottom = R"({"file": 0, "offsets": [2, 0], "shape": [2, 2], "data_offsets": [24, 40]})";

ErrorCode code_of(const std::string& text) {
  try {
    parse_index(text, "test");
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::Internal;  // "accepted"
}

std::string message_of(const std::string& text) {
  try {
    parse_index(text, "test");
  } catch (const Error& e) {
    return e.message();
  }
  return "accepted";
}

TEST(DistIndex, AValidIndexRoundTrips) {
  const GlobalIndex index = parse_index(index_with(kTop + "," + kBottom), "test");
  ASSERT_EQ(index.tensors.size(), 1u);
  EXPECT_EQ(index.tensors[0].chunks.size(), 2u);
  const GlobalIndex again = parse_index(index_to_json(index), "again");
  EXPECT_EQ(index_to_json(again), index_to_json(index));
}

TEST(DistIndex, HostileIndexesAreCorrupt) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"box outside", index_with(kTop + R"(, {"file": 0, "offsets": [3, 0], "shape": [2, 2], "data_offsets": [24, 40]})")},
      {"overlap", index_with(kTop + R"(, {"file": 0, "offsets": [1, 0], "shape": [2, 2], "data_offsets": [24, 40]})")},
      {"past file end", index_with(kTop + R"(, {"file": 0, "offsets": [2, 0], "shape": [2, 2], "data_offsets": [64, 80]})")},
      {"wrong length", index_with(kTop + R"(, {"file": 0, "offsets": [2, 0], "shape": [2, 2], "data_offsets": [24, 36]})")},
      {"missing coverage", index_with(kTop)},
      {"absurd shape", index_with(kTop, "[4611686018427387904, 4611686018427387904]")},
      {"negative dim", index_with(kTop, "[-4, 2]")},
      {"negative offset", index_with(R"({"file": 0, "offsets": [-2, 0], "shape": [2, 2], "data_offsets": [8, 24]})" + std::string(",") + kBottom)},
      {"empty chunk", index_with(kTop + "," + kBottom + R"(, {"file": 0, "offsets": [0, 0], "shape": [0, 2], "data_offsets": [8, 8]})")},
      {"file index", index_with(R"({"file": 7, "offsets": [0, 0], "shape": [4, 2], "data_offsets": [8, 40]})")},
      {"wrong rank", index_with(R"({"file": 0, "offsets": [0], "shape": [4], "data_offsets": [8, 40]})")},
      {"path escape", index_with(kTop + "," + kBottom, "[4, 2]", R"([{"name": "../a.safetensors", "rank": 0, "size": 72}])")},
      {"subfolder", index_with(kTop + "," + kBottom, "[4, 2]", R"([{"name": "x/a.safetensors", "rank": 0, "size": 72}])")},
      {"bad rank", index_with(kTop + "," + kBottom, "[4, 2]", R"([{"name": "a.safetensors", "rank": 3, "size": 72}])")},
      {"file twice", index_with(kTop + "," + kBottom, "[4, 2]", R"([{"name": "a.safetensors", "rank": 0, "size": 72}, {"name": "a.safetensors", "rank": 0, "size": 72}])")},
      {"not json", "{\"format\": "},
      {"wrong types", R"({"format": "ckptio.distributed", "version": 1, "world_size": 1, "files": {}, "tensors": []})"},
      {"huge offset", index_with(R"({"file": 0, "offsets": [18446744073709551615, 0], "shape": [4, 2], "data_offsets": [8, 40]})")},
      {"bad dtype", R"({"format": "ckptio.distributed", "version": 1, "world_size": 1, "files": [], "tensors": {"w": {"dtype": "F99", "shape": [], "chunks": []}}})"},
      {"wrong format", R"({"format": "other", "version": 1})"},
  };
  for (const auto& [what, text] : cases) {
    EXPECT_EQ(code_of(text), ErrorCode::Corrupt) << what << ": " << message_of(text);
  }
  EXPECT_NE(message_of(cases[1].second).find("chunks overlap"), std::string::npos);
  EXPECT_NE(message_of(cases[4].second).find("cover 4 of 8 elements"), std::string::npos);
}

TEST(DistIndex, OverlapsAreFoundAlongAnyDimension) {
  // Column chunks (the sweep runs along dim 1) where two overlap in both dimensions.
  std::string chunks;
  for (int c = 0; c < 8; ++c) {
    chunks += (c ? "," : "") + std::string(R"({"file": 0, "offsets": [0, )") + std::to_string(c) +
              R"(], "shape": [4, 1], "data_offsets": [8, 24]})";
  }
  const std::string files = R"([{"name": "a.safetensors", "rank": 0, "size": 200}])";
  EXPECT_NO_THROW(parse_index(index_with(chunks, "[4, 8]", files), "ok"));
  const std::string overlap = chunks + R"(, {"file": 0, "offsets": [3, 2], "shape": [1, 2], "data_offsets": [8, 16]})";
  EXPECT_NE(message_of(index_with(overlap, "[4, 8]", files)).find("chunks overlap"), std::string::npos);
}

TEST(DistIndex, NewerVersionsAndSplitSubByteTensorsAreUnsupported) {
  EXPECT_EQ(code_of(R"({"format": "ckptio.distributed", "version": 2})"), ErrorCode::Unsupported);
  const std::string f4 = R"({"format": "ckptio.distributed", "version": 1, "world_size": 1, "files": [{"name": "a.safetensors", "rank": 0, "size": 72}], "tensors": {"w": {"dtype": "F4", "shape": [4], "chunks": [{"file": 0, "offsets": [0], "shape": [2], "data_offsets": [8, 9]}, {"file": 0, "offsets": [2], "shape": [2], "data_offsets": [9, 10]}]}}})";
  EXPECT_EQ(code_of(f4), ErrorCode::Unsupported);
}

TEST(DistIndex, ADataFileShorterThanTheIndexSaysIsCorruptOnRead) {
  ckptio::testing::TempDir tmp;
  ckptio::testing::write_file(tmp / std::string(kIndexName), index_with(kTop + "," + kBottom));
  ckptio::testing::write_file(tmp / "a.safetensors", std::string(40, 'x'));  // not 72
  const Reader reader = Reader::open(tmp.path());
  std::vector<std::byte> dst(32);
  try {
    reader.read_tensor("w", dst);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_NE(e.message().find("the index says 72"), std::string::npos) << e.what();
  }
  ckptio::testing::write_file(tmp / std::string(kIndexName), std::string(100, '['));
  EXPECT_THROW(Reader::open(tmp.path()), Error);
}

TEST(DistIndex, AHugeTensorWhoseFileIsShortFailsBeforeAnythingIsAllocated) {
  ckptio::testing::TempDir tmp;
  const std::string huge = std::to_string((uint64_t{1} << 58) + 8);
  ckptio::testing::write_file(
      tmp / std::string(kIndexName),
      index_with(R"({"file": 0, "offsets": [0, 0], "shape": [268435456, 268435456], "data_offsets": [8, )" + huge + "]}",
                 "[268435456, 268435456]",
                 R"([{"name": "a.safetensors", "rank": 0, "size": )" + huge + "}]"));
  ckptio::testing::write_file(tmp / "a.safetensors", std::string(40, 'x'));
  try {
    (void)ckptio::load_checkpoint(tmp.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt) << e.what();
  }
  try {
    consolidate(tmp.path(), tmp / "out");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt) << e.what();
  }
}

}  // namespace
}  // namespace ckptio::dist
