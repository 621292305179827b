// Sizes, names, the greedy split and the index text, without touching disk.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ckptio/error.h"
#include "ckptio/sharded.h"

namespace ckptio {
namespace {

std::vector<std::byte> g_pool(1 << 16);

NamedTensor u8(std::string name, int64_t n) {
  return NamedTensor{std::move(name), TensorView{DType::U8, {n}, std::span<const std::byte>(g_pool.data(), static_cast<size_t>(n))}};
}

std::vector<std::vector<std::string>> groups(const ShardPlan& plan, const std::vector<NamedTensor>& ts) {
  std::vector<std::vector<std::string>> out;
  for (const auto& s : plan.shards) {
    out.emplace_back();
    for (size_t m : s.members) out.back().push_back(ts[m].name);
  }
  return out;
}

TEST(ShardedSize, ParsesLikeHuggingFace) {
  EXPECT_EQ(parse_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_size("10KB"), 10'000u);
  EXPECT_EQ(parse_size("1TB"), 1'000'000'000'000u);
  EXPECT_EQ(parse_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_size("3MiB"), 3ull << 20);
  EXPECT_EQ(parse_size("1KiB"), 1024u);
  EXPECT_EQ(parse_size("1000000"), 1'000'000u);
  EXPECT_EQ(parse_size(" 4gb "), 4'000'000'000u);
  EXPECT_EQ(parse_size("1.5GB"), 1'500'000'000u);
  EXPECT_EQ(parse_size("100 MB"), 100'000'000u);
  EXPECT_EQ(parse_size("7B"), 7u);
}

TEST(ShardedSize, RejectsNonsense) {
  for (const char* bad : {"", "GB", "5XB", "-1GB", "0", "0GB", "1.5", "1..5GB", "5 G B", "1e3MB",
                          "99999999999TB"}) {
    try {
      parse_size(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << bad;
    }
  }
}

TEST(ShardedNames, FollowTheHuggingFacePattern) {
  EXPECT_EQ(shard_file_name("model", 0, 3), "model-00001-of-00003.safetensors");
  EXPECT_EQ(shard_file_name("ema", 11, 12), "ema-00012-of-00012.safetensors");
  EXPECT_EQ(single_file_name("optimizer"), "optimizer.safetensors");
  EXPECT_EQ(index_file_name("model"), "model.safetensors.index.json");
  EXPECT_THROW(shard_file_name("model", 0, 100000), Error);
}

TEST(ShardedPlan, GreedyInKeyOrderWithExactBoundaries) {
  // Limit 100: 60+40 fills a shard exactly; 1 more starts a new one; 150 is alone; 0-byte joins.
  std::vector<NamedTensor> ts = {u8("a", 60), u8("b", 40), u8("c", 1), u8("big", 150),
                                 u8("d", 100), u8("e", 0)};
  const ShardPlan plan = plan_shards(ts, 100);
  EXPECT_EQ(groups(plan, ts), (std::vector<std::vector<std::string>>{
                                  {"a", "b"}, {"c"}, {"big"}, {"d", "e"}}));
  EXPECT_EQ(plan.total_size, 351u);
  EXPECT_EQ(plan.shards[2].data_bytes, 150u);
  EXPECT_EQ(plan.shards[0].file_name, "model-00001-of-00004.safetensors");
  EXPECT_TRUE(plan.sharded());
}

TEST(ShardedPlan, OversizeFirstTensorAndSingleShard) {
  std::vector<NamedTensor> ts = {u8("huge", 500), u8("x", 10)};
  EXPECT_EQ(groups(plan_shards(ts, 100), ts),
            (std::vector<std::vector<std::string>>{{"huge"}, {"x"}}));
  const ShardPlan one = plan_shards(ts, 510, "ema");
  ASSERT_EQ(one.shards.size(), 1u);
  EXPECT_EQ(one.shards[0].file_name, "ema.safetensors");
  EXPECT_FALSE(one.sharded());
  EXPECT_TRUE(plan_shards({}, 100).shards.empty());
}

TEST(ShardedPlan, RejectsBadInput) {
  std::vector<NamedTensor> dup = {u8("a", 1), u8("a", 2)};
  EXPECT_THROW(plan_shards(dup, 100), Error);
  std::vector<NamedTensor> ok = {u8("a", 1)};
  EXPECT_THROW(plan_shards(ok, 0), Error);
  for (const char* base : {"", ".hidden", "a/b"}) EXPECT_THROW(plan_shards(ok, 10, base), Error) << base;
}

TEST(ShardedIndexText, IsIndentTwoSortedWithTotalSize) {
  std::vector<NamedTensor> ts = {u8("z", 60), u8("a", 60)};
  const ShardPlan plan = plan_shards(ts, 100);
  const std::string text = render_shard_index(plan, ts, {{"note", "x\xc3\xa9"}});
  EXPECT_EQ(text,
            "{\n"
            "  \"metadata\": {\n"
            "    \"note\": \"x\\u00e9\",\n"
            "    \"total_size\": 120\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"a\": \"model-00002-of-00002.safetensors\",\n"
            "    \"z\": \"model-00001-of-00002.safetensors\"\n"
            "  }\n"
            "}\n");
  EXPECT_THROW(render_shard_index(plan, ts, {{"total_size", "1"}}), Error);
}

ShardIndex parse(const std::string& json, const std::string& name = "model.safetensors.index.json") {
  return parse_shard_index(json, "/folder", name);
}

void expect_corrupt(const std::string& json, const std::string& needle,
                    const std::string& name = "model.safetensors.index.json") {
  try {
    parse(json, name);
    ADD_FAILURE() << "accepted " << json;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt) << e.what();
    EXPECT_NE(e.message().find(needle), std::string::npos) << e.what();
    EXPECT_NE(e.message().find("/folder/" + name), std::string::npos) << e.what();
  }
}

TEST(ShardedIndexParse, TellsTheFlavoursApart) {
  const ShardIndex hf = parse(R"({"metadata":{"total_size":120,"format":"pt","n":3},"weight_map":
      {"b":"model-00002-of-00002.safetensors","a":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}})");
  EXPECT_EQ(hf.flavour, IndexFlavour::HuggingFace);
  EXPECT_EQ(*hf.total_size_bytes, 120.0);
  EXPECT_EQ(hf.metadata.at("format"), "pt");
  EXPECT_EQ(hf.metadata.at("n"), "3");
  ASSERT_EQ(hf.shard_files.size(), 2u);
  EXPECT_EQ(hf.shard_files[0], "model-00002-of-00002.safetensors");  // first appearance
  ASSERT_EQ(hf.weight_map.size(), 3u);
  EXPECT_EQ(hf.weight_map[0].first, "b");  // the file's key order

  const ShardIndex cai = parse(R"({"metadata":{"total_size":0.5},"weight_map":{"a":"model-00001.safetensors"}})");
  EXPECT_EQ(cai.flavour, IndexFlavour::ColossalAI);
  EXPECT_EQ(*cai.total_size_bytes, 512.0 * 1024.0);
  const ShardIndex cai2 = parse(R"({"weight_map":{"a":"model-00001.safetensors"}})");
  EXPECT_EQ(cai2.flavour, IndexFlavour::ColossalAI);
  EXPECT_FALSE(cai2.total_size_bytes.has_value());

  const ShardIndex bin = parse(R"({"metadata":{"total_size":4},"weight_map":{"a":"pytorch_model-00001-of-00001.bin"}})",
                               "pytorch_model.bin.index.json");
  EXPECT_EQ(bin.flavour, IndexFlavour::TorchBin);
}

TEST(ShardedIndexParse, RejectsEveryBadIndex) {
  expect_corrupt(R"({"metadata":{"total_size":1},"weight_map":{"a":"model-00001.safetensors")", "not valid JSON");
  expect_corrupt("[]", "not a JSON object");
  expect_corrupt(R"({"metadata":{}})", "weight_map");
  expect_corrupt(R"({"weight_map":[]})", "weight_map");
  expect_corrupt(R"({"weight_map":{"a":"x.safetensors","a":"y.safetensors"}})", "more than once");
  expect_corrupt(R"({"weight_map":{"a":"/etc/x.safetensors"}})", "absolute");
  expect_corrupt(R"({"weight_map":{"a":"../x.safetensors"}})", "escapes");
  expect_corrupt(R"({"weight_map":{"a":"sub/../../x.safetensors"}})", "escapes");
  expect_corrupt(R"({"weight_map":{"a":"./x.safetensors"}})", "escapes");
  expect_corrupt(R"({"weight_map":{"a":"sub//x.safetensors"}})", "escapes");
  expect_corrupt(R"({"weight_map":{"a":"..\\x.safetensors"}})", "backslash");
  expect_corrupt(R"({"weight_map":{"a":""}})", "empty");
  expect_corrupt(R"({"weight_map":{"a":3}})", "not a string");
  expect_corrupt(R"({"weight_map":{"":"x.safetensors"}})", "empty tensor name");
  expect_corrupt(R"({"weight_map":{"a":"pytorch_model-00001.bin"}})", "never falls back");
  expect_corrupt(R"({"weight_map":{"a":"model-00001.safetensors"}})", "must end in '.bin'",
                 "pytorch_model.bin.index.json");
  expect_corrupt(R"({"weight_map":{"a":"Model-00001.safetensors","b":"model-00001.safetensors"}})",
                 "differ only in case");
  expect_corrupt(R"({"metadata":{"total_size":"big"},"weight_map":{}})", "total_size");
  expect_corrupt(R"({"metadata":[],"weight_map":{}})", "metadata");
}

TEST(ShardedIndexParse, DuplicateDetectionOnlyLooksAtTheWeightMap) {
  // The same key in metadata and weight_map, and nested objects elsewhere, are fine.
  const ShardIndex i = parse(R"({"metadata":{"a":{"a":1,"b":2},"total_size":1},"weight_map":{"a":"x.safetensors"}})");
  EXPECT_EQ(i.weight_map.size(), 1u);
  EXPECT_EQ(i.metadata.at("a"), R"({"a":1,"b":2})");
}

}  // namespace
}  // namespace ckptio
