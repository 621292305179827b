// consolidate: a distributed checkpoint to a Hugging Face folder the sharded reader accepts.
#include <gtest/gtest.h>

#include "ckptio/dist.h"
#include "ckptio/sharded.h"
#include "dist_helpers.h"
#include "support/test_util.h"

namespace ckptio::dist {
namespace {

using namespace std::chrono_literals;
using testing::global_bytes;
using testing::Layout;
namespace fs = std::filesystem;

TEST(DistConsolidate, WritesTheFullTensorsAsAShardedFolder) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  const std::vector<testing::Spec> specs{
      {"a.weight", DType::F32, {32, 16}, Layout::Rows},
      {"b.weight", DType::BF16, {24, 8}, Layout::Grid},
      {"c.state", DType::F32, {5, 7}, Layout::Flat},
      {"d.bias", DType::F16, {9}, Layout::Replicated},
  };
  const auto errors = testing::save_on_ranks(4, dir, specs);
  for (const auto& e : errors) ASSERT_EQ(testing::error_message(e), "");

  ConsolidateOptions co;
  co.max_shard_size = 1500;  // several shards
  const ConsolidateReport report = consolidate(dir, tmp / "hf", co);
  EXPECT_EQ(report.tensors, 4u);
  EXPECT_GT(report.files.size(), 2u);
  EXPECT_EQ(report.files.back(), "model.safetensors.index.json");
  const ShardedReader reader = ShardedReader::open(tmp / "hf");
  ASSERT_EQ(reader.tensor_count(), 4u);
  EXPECT_NO_THROW((void)verify_sharded(tmp / "hf"));
  for (const auto& [name, dtype, shape, layout] : specs) {
    const Tensor t = reader.tensor(name);
    EXPECT_EQ(t.dtype(), dtype);
    EXPECT_EQ(t.shape(), shape);
    const auto want = global_bytes(name, dtype, shape);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), t.bytes().begin(), t.bytes().end())) << name;
  }
  // Into a single file when everything fits, and never over an existing folder's files.
  EXPECT_EQ(consolidate(dir, tmp / "one").files, std::vector<std::string>{"model.safetensors"});
  EXPECT_THROW(consolidate(dir, tmp / "hf"), Error);
}

}  // namespace
}  // namespace ckptio::dist
