// The CLI commands of this area, run as a user would: `ckptio inspect|verify DIR` on sharded
// folders and `ckptio diff A B`, checking exit codes and output.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "ckptio/safetensors.h"
#include "ckptio/sharded.h"
#include "support/cli_run.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

struct CliRun {
  int rc;
  std::string out;  // stdout then stderr
};

CliRun ckptio(const TempDir&, const std::string& args) {
  const testing::CliResult r = testing::run_ckptio_line(args);
  return {r.exit_code, r.all()};
}

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

class CliSharded : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      Tensor t = Tensor::zeros(DType::F32, {25});
      float* f = reinterpret_cast<float*>(t.mutable_bytes().data());
      for (int k = 0; k < 25; ++k) f[k] = static_cast<float>(i * 100 + k);
      tensors.push_back(t);
      named.push_back({"w" + std::to_string(i), tensors.back().view()});
    }
    ShardedWriteOptions o;
    o.max_shard_size = 100;
    o.sync = false;
    save_sharded(tmp / "a", named, o);
  }
  TempDir tmp;
  std::vector<Tensor> tensors;
  std::vector<NamedTensor> named;
};

TEST_F(CliSharded, InspectShowsShardsAndTotals) {
  const CliRun text = ckptio(tmp, "inspect " + (tmp / "a").string());
  ASSERT_EQ(text.rc, 0) << text.out;
  EXPECT_TRUE(contains(text.out, "format: sharded (huggingface index model.safetensors.index.json)")) << text.out;
  EXPECT_TRUE(contains(text.out, "total: 3 tensors, 300 tensor bytes")) << text.out;
  const CliRun json = ckptio(tmp, "inspect --json " + (tmp / "a").string());
  ASSERT_EQ(json.rc, 0) << json.out;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["flavour"], "huggingface");
  EXPECT_EQ(j["shards"].size(), 3u);
  EXPECT_EQ(j["shards"][1]["tensor_bytes"], 100);
  EXPECT_EQ(j["tensors"][2]["shard"], "model-00003-of-00003.safetensors");
}

TEST_F(CliSharded, VerifyPassesWarnsAndFails) {
  CliRun r = ckptio(tmp, "verify " + (tmp / "a").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "ok: ")) << r.out;
  EXPECT_FALSE(contains(r.out, "warning")) << r.out;
  // A wrong total_size is a warning, not a failure.
  auto j = nlohmann::json::parse(testing::read_file(tmp / "a" / "model.safetensors.index.json"));
  j["metadata"]["total_size"] = 299;
  testing::write_file(tmp / "a" / "model.safetensors.index.json", j.dump(2));
  r = ckptio(tmp, "verify " + (tmp / "a").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "warning: ")) << r.out;
  // A missing shard fails with a typed error.
  fs::remove(tmp / "a" / "model-00002-of-00003.safetensors");
  r = ckptio(tmp, "verify " + (tmp / "a").string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "ckptio: error: not_found:")) << r.out;
  EXPECT_TRUE(contains(r.out, "model-00002-of-00003.safetensors")) << r.out;
}

TEST_F(CliSharded, DiffExitCodes) {
  save_safetensors(tmp / "b.safetensors", named);
  CliRun r = ckptio(tmp, "diff " + (tmp / "a").string() + " " + (tmp / "b.safetensors").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "equal: 3 tensors compared")) << r.out;
  reinterpret_cast<float*>(tensors[1].mutable_bytes().data())[7] += 0.5f;
  save_safetensors(tmp / "c.safetensors", named);
  r = ckptio(tmp, "diff " + (tmp / "a").string() + " " + (tmp / "c.safetensors").string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "w1: 1 of 25 values differ (first at element 7: 107 vs 107.5")) << r.out;
  r = ckptio(tmp, "diff --atol 0.5 " + (tmp / "a").string() + " " + (tmp / "c.safetensors").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  r = ckptio(tmp, "diff " + (tmp / "a").string() + " " + (tmp / "missing").string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "ckptio: error: not_found:")) << r.out;
  r = ckptio(tmp, "diff --atol -1 a b");
  EXPECT_EQ(r.rc, 2) << r.out;
}

TEST_F(CliSharded, ConvertShardsJoinsAndCasts) {
  // Sharded folder -> one file, read back equal.
  CliRun r = ckptio(tmp, "convert " + (tmp / "a").string() + " " + (tmp / "one.safetensors").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "read back and compared: 3 tensors equal")) << r.out;
  // One file -> folder of 200-byte shards.
  r = ckptio(tmp, "convert --max-shard-size 200 " + (tmp / "one.safetensors").string() + " " +
                      (tmp / "two").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(ShardedReader::open(tmp / "two").index().shard_files.size(), 2u);
  // Cast to bf16: values that are exact in bf16 survive, dtype changes.
  r = ckptio(tmp, "convert --dtype bf16 " + (tmp / "a").string() + " " + (tmp / "h.safetensors").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto h = SafetensorsReader::open(tmp / "h.safetensors");
  EXPECT_EQ(h.info("w2").dtype, DType::BF16);
  EXPECT_EQ(bf16_to_f32(reinterpret_cast<const uint16_t*>(h.tensor("w2").bytes().data())[3]), 203.0f);
  r = ckptio(tmp, "convert --max-shard-size 5XB " + (tmp / "a").string() + " " + (tmp / "x").string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "invalid_argument")) << r.out;
}

}  // namespace
}  // namespace ckptio
