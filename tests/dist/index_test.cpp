// Hostile global indexes: every malformation is a typed error, never a crash.
#include <gtest/gtest.h>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/load.h"
#include "dist/index_parse.h"
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

TEST(DistIndex, AnyJsonLayoutOfTheIndexReadsTheSame) {
  const GlobalIndex want = parse_index(index_with(kBottom + "," + kTop), "canonical");
  const std::string rows = R"("chunks": [{"data_offsets": [24, 40], "shape": [2, 2], "offsets": [2, 0], "file": 0},
                                         {"file": 0, "offsets": [0, 0], "shape": [2, 2], "data_offsets": [8, 24], "note": [1, {"x": null}]}])";
  const std::vector<std::pair<std::string, std::string>> variants{
      // Tensors before files, the version last, unknown keys of every kind, no whitespace.
      {"any order", R"({"tensors": {"w": {)" + rows + R"(, "shape": [4, 2], "dtype": "F32"}},
                    "files": [{"size": 72, "rank": 0, "name": "a.safetensors", "extra": true}],
                    "world_size": 1, "comment": "\u00e9\ud83d\ude00", "format": "ckptio.distributed",
                    "version": 1})"},
      {"tight", R"({"format":"ckptio.distributed","version":1,"world_size":1,"files":[{"name":"a.safetensors","rank":0,"size":72}],"tensors":{"w":{"dtype":"F32","shape":[4,2],)" + rows + "}}}"},
      {"escaped", "\t{\"form\\u0061t\": \"ckptio.distribut\\u0065d\", \"version\" : 1 ,\r\n \"world_size\": 1, "
                  "\"files\": [{\"name\": \"\\u0061.safetensors\", \"rank\": 0, \"size\": 72}], "
                  "\"tensors\": {\"\\u0077\": {\"dtype\": \"F32\", \"shape\": [4, 2], " + rows + "}}}\n "},
  };
  for (const auto& [what, text] : variants) {
    GlobalIndex got;
    ASSERT_NO_THROW(got = parse_index(text, what)) << what << ": " << message_of(text);
    EXPECT_EQ(index_to_json(got), index_to_json(want)) << what;
  }
  // Names with quotes, backslashes, control characters and non-ASCII text round-trip.
  GlobalIndex odd = want;
  odd.tensors[0].name = "a \"q\" \\ \x01 \xc3\xa9 \xf0\x9f\x98\x80";
  const GlobalIndex back = parse_index(index_to_json(odd), "odd");
  EXPECT_EQ(back.tensors[0].name, odd.tensors[0].name);
}

// parse_index reads with simdjson and hands what it does not accept whole to the nlohmann reader:
// both must accept the same texts with the same result and refuse the others with the same error.
TEST(DistIndex, TheFastReaderAgreesWithTheReferenceOnEveryText) {
  const std::string valid = index_with(kTop + "," + kBottom);
  auto outcome = [](auto&& parse, const std::string& text) -> std::string {
    try {
      return "accepted " + index_to_json(parse(text, "test"));
    } catch (const Error& e) {
      return "error " + std::to_string(static_cast<int>(e.code())) + " " + e.message();
    }
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string t = valid;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  const std::vector<std::string> texts = {
      valid,
      "\xEF\xBB\xBF" + valid,                              // a byte-order mark: nlohmann skips it
      replace("\"rank\": 0", "\"rank\": -0"),                // simdjson reads -0 as the integer 0
      replace("\"rank\": 0", "\"rank\": [-0]"),
      replace("\"w\"", "\"w-0\""),                            // a name with -0 in it
      replace("\"w\"", "\"w:-0\""),
      replace("\"rank\": 0", "\"rank\": 0.0"),
      replace("\"rank\": 0", "\"rank\": 1e0"),
      replace("\"rank\": 0", "\"rank\": 18446744073709551616"),  // past uint64
      replace("\"rank\": 0", "\"rank\": 18446744073709551615"),
      replace("\"rank\": 0", "\"rank\": -1"),
      replace("\"shape\": [4, 2]", "\"shape\": [4, -2]"),
      replace("\"shape\": [4, 2]", "\"shape\": [4, 2.5]"),
      replace("\"F32\"", "\"F\\u0033\\u0032\""),
      replace("\"w\"", "\"\\ud800\""),                      // a lone surrogate
      replace("\"w\"", "\"w\\u0000\""),
      replace("\"w\"", "\"\xff\""),                          // not UTF-8
      replace("\"version\": 1", "\"version\": 1, \"version\": 1"),
      replace("\"version\": 1", "\"version\": 2"),
      replace("\"version\": 1", "\"version\": true"),
      replace("\"version\": 1", "\"version\": null"),
      valid + " x",
      valid + "\n",
      valid.substr(0, valid.size() - 1),
      std::string(300, '[') + std::string(300, ']'),
      "{\"x\": " + std::string(300, '[') + std::string(300, ']') + "}",
      "",
      "[]",
      "{}",
  };
  for (const std::string& text : texts) {
    EXPECT_EQ(outcome(parse_index, text), outcome(detail::parse_index_with_nlohmann, text)) << text.substr(0, 200);
  }
}

TEST(DistIndex, MalformedOrAmbiguousJsonIsCorrupt) {
  const std::string ok = index_with(kTop + "," + kBottom);
  ASSERT_EQ(code_of(ok), ErrorCode::Internal);  // accepted
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string t = ok;
    const size_t at = t.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return t.replace(at, from.size(), to);
  };
  const std::vector<std::pair<std::string, std::string>> cases{
      {"trailing text", ok + " {}"},
      {"second document", ok + ok},
      {"key twice", replace(R"("world_size": 1,)", R"("world_size": 1, "world_size": 1,)")},
      {"chunk key twice", replace(R"("file": 0, "offsets": [0, 0])", R"("file": 0, "file": 0, "offsets": [0, 0])")},
      {"tensor twice", replace(R"("tensors": {)", R"("tensors": {"w": {"dtype": "F32", "shape": [4, 2], "chunks": [)" + kTop + "," + kBottom + "]}, ")},
      {"fraction", replace(R"("world_size": 1)", R"("world_size": 1.0)")},
      {"exponent", replace(R"("size": 72)", R"("size": 72e0)")},
      {"leading zero", replace(R"("size": 72)", R"("size": 072)")},
      {"over 64 bits", replace(R"("size": 72)", R"("size": 18446744073709551616)")},
      {"string size", replace(R"("size": 72)", R"("size": "72")")},
      {"negative size", replace(R"("size": 72)", R"("size": -72)")},
      {"three offsets", replace(R"("data_offsets": [8, 24])", R"("data_offsets": [8, 24, 40])")},
      {"missing data_offsets", replace(R"(, "data_offsets": [8, 24])", "")},
      {"bad escape", replace(R"("name": "a.safetensors")", R"("name": "a\x.safetensors")")},
      {"lone surrogate", replace(R"("name": "a.safetensors")", R"("name": "a\ud800.safetensors")")},
      {"control character", replace(R"("name": "a.safetensors")", "\"name\": \"a\n.safetensors\"")},
      {"bad UTF-8", replace(R"("name": "a.safetensors")", "\"name\": \"a\xc3.safetensors\"")},
      {"overlong UTF-8", replace(R"("name": "a.safetensors")", "\"name\": \"a\xc0\xaf.safetensors\"")},
      {"unterminated", ok.substr(0, ok.size() / 2)},
      {"bare word", replace(R"("version": 1)", R"("version": 1, "x": nul)")},
      {"deep nesting", replace(R"("version": 1)", R"("version": 1, "x": )" + std::string(5000, '[') + std::string(5000, ']'))},
      {"not an object", "[]"},
      {"empty", ""},
  };
  for (const auto& [what, text] : cases) {
    EXPECT_EQ(code_of(text), ErrorCode::Corrupt) << what << ": " << message_of(text);
  }
  EXPECT_NE(message_of(cases[2].second).find("appears twice"), std::string::npos);
  EXPECT_NE(message_of(cases[4].second).find("listed twice"), std::string::npos);
  // JSON errors say where they are (nlohmann counts the bytes read, up to the one that gave the
  // error away); content errors name the tensor.
  const std::string bare = replace(R"("version": 1)", R"("version": 1, "x": nul)");
  const std::string bare_message = message_of(bare);
  const size_t at = bare_message.find("at byte ");
  ASSERT_NE(at, std::string::npos) << bare_message;
  const size_t byte = std::stoul(bare_message.substr(at + 8));
  EXPECT_GE(byte, bare.find("nul")) << bare_message;
  EXPECT_LE(byte, bare.find("nul") + 4) << bare_message;
  EXPECT_NE(message_of(cases[3].second).find("tensor 'w': key \"file\" appears twice"), std::string::npos)
      << message_of(cases[3].second);
  EXPECT_NE(message_of(replace(R"("offsets": [0, 0])", R"("offsets": [0, "0"])")).find("tensor 'w': a chunk's offsets"),
            std::string::npos);
}

TEST(DistIndex, ANewerVersionIsUnsupportedWhateverItsLayoutAndWhereverItsHeader) {
  // "files" and "tensors" of another shape, before the header that says which version they are.
  const std::string body = R"({"files": {"a": 1}, "tensors": [{"w": 2}], "extra": [[[]]], )";
  EXPECT_EQ(code_of(body + R"("format": "ckptio.distributed", "version": 2, "world_size": 1})"),
            ErrorCode::Unsupported);
  EXPECT_EQ(code_of(body + R"("world_size": 1, "version": 2, "format": "ckptio.distributed"})"),
            ErrorCode::Unsupported);
  // The same body under this version is what it looks like: corrupt, the first error reported.
  const std::string v1 = body + R"("format": "ckptio.distributed", "version": 1, "world_size": 1})";
  EXPECT_EQ(code_of(v1), ErrorCode::Corrupt);
  EXPECT_NE(message_of(v1).find("\"files\" is not a list"), std::string::npos) << message_of(v1);
  // And a valid index whose header comes last reads as usual.
  const std::string last = R"({"files": [{"name": "a.safetensors", "rank": 0, "size": 72}], "tensors": {"w": {"dtype": "F32", "shape": [4, 2], "chunks": [)" +
                           kTop + "," + kBottom + R"(]}}, "world_size": 1, "version": 1, "format": "ckptio.distributed"})";
  EXPECT_EQ(index_to_json(parse_index(last, "last")), index_to_json(parse_index(index_with(kTop + "," + kBottom), "first")));
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
