// load_checkpoint falls back to the Hugging Face Hub when a path does not exist locally and reads
// as a Hub spec: "org/name" (sharded: index then shards, read through the snapshot symlinks) and
// "org/name/model.safetensors", here against the fake Hub on 127.0.0.1.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "ckptio/error.h"
#include "ckptio/load.h"
#include "hub/fake_hub.h"

namespace ckptio::hub {
namespace {

namespace fs = std::filesystem;

using ckptio::testing::CleanHubEnv;
using ckptio::testing::commit_id;
using ckptio::testing::FakeHub;
using ckptio::testing::json;
using ckptio::testing::ScopedEnv;
using ckptio::testing::TempDir;

// A safetensors file of F32 tensors, written by hand from the format's definition.
std::string safetensors_bytes(const std::vector<std::pair<std::string, std::vector<float>>>& tensors) {
  json header = json::object();
  std::string data;
  for (const auto& [name, values] : tensors) {
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    header[name] = {{"dtype", "F32"}, {"shape", {values.size()}}, {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h += ' ';
  std::string out(8, '\0');
  const uint64_t n = h.size();
  std::memcpy(out.data(), &n, 8);
  return out + h + data;
}

std::vector<float> values_of(const Tensor& t) {
  std::vector<float> v(t.numel());
  std::memcpy(v.data(), t.bytes().data(), t.nbytes());
  return v;
}

class HubLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    clean_env_ = std::make_unique<CleanHubEnv>(tmp_ / "home");
    hub_ = std::make_unique<FakeHub>(tmp_ / "server");
    hub_->add_file("org/sharded", c1_, "model-00001-of-00002.safetensors",
                   safetensors_bytes({{"a", {1, 2, 3}}}), true);
    hub_->add_file("org/sharded", c1_, "model-00002-of-00002.safetensors",
                   safetensors_bytes({{"b", {4, 5}}, {"c", {6}}}), true);
    const json index = {{"metadata", {{"total_size", 24}}},
                        {"weight_map", {{"a", "model-00001-of-00002.safetensors"},
                                        {"b", "model-00002-of-00002.safetensors"},
                                        {"c", "model-00002-of-00002.safetensors"}}}};
    hub_->add_file("org/sharded", c1_, "model.safetensors.index.json", index.dump(2), false);
    hub_->set_ref("org/sharded", "main", c1_);
    hub_->add_file("org/single", c1_, "model.safetensors", safetensors_bytes({{"w", {7, 8}}}), true);
    hub_->set_ref("org/single", "main", c1_);
    hub_->start();
    endpoint_ = std::make_unique<ScopedEnv>("HF_ENDPOINT", hub_->endpoint().c_str());
    cache_ = std::make_unique<ScopedEnv>("HF_HUB_CACHE", (tmp_ / "cache").c_str());
    quiet_ = std::make_unique<ScopedEnv>("HF_HUB_DISABLE_PROGRESS_BARS", "1");
  }

  TempDir tmp_;
  std::unique_ptr<CleanHubEnv> clean_env_;
  std::unique_ptr<FakeHub> hub_;
  std::unique_ptr<ScopedEnv> endpoint_, cache_, quiet_;
  std::string c1_ = commit_id("load1");
};

TEST_F(HubLoad, ShardedRepoByName) {
  const LoadedCheckpoint ck = load_checkpoint("org/sharded");
  ASSERT_EQ(ck.tensors.size(), 3u);
  EXPECT_EQ(values_of(ck.tensors.at("a")), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(values_of(ck.tensors.at("b")), (std::vector<float>{4, 5}));
  EXPECT_EQ(values_of(ck.tensors.at("c")), (std::vector<float>{6}));
  EXPECT_EQ(ck.report.source.kind, SourceKind::ShardedFolder);

  // Offline, the same name loads from the cache.
  hub_->clear_requests();
  ScopedEnv offline("HF_HUB_OFFLINE", "1");
  EXPECT_EQ(load_checkpoint("org/sharded").tensors.size(), 3u);
  EXPECT_TRUE(hub_->requests().empty());
}

TEST_F(HubLoad, SingleFileByPathInRepo) {
  const LoadedCheckpoint ck = load_checkpoint("org/single/model.safetensors");
  EXPECT_EQ(values_of(ck.tensors.at("w")), (std::vector<float>{7, 8}));
  EXPECT_EQ(values_of(load_checkpoint("org/single").tensors.at("w")), (std::vector<float>{7, 8}));
}

TEST_F(HubLoad, LocalPathsWinAndMissingReposAreNotFound) {
  // A local folder with the same relative name is used without asking the Hub.
  const fs::path cwd = fs::current_path();
  fs::create_directories(tmp_ / "work" / "org" / "single");
  ckptio::testing::write_file(tmp_ / "work" / "org" / "single" / "model.safetensors",
                              safetensors_bytes({{"local", {1}}}));
  fs::current_path(tmp_ / "work");
  const LoadedCheckpoint ck = load_checkpoint("org/single");
  fs::current_path(cwd);
  EXPECT_EQ(ck.tensors.count("local"), 1u);
  EXPECT_TRUE(hub_->requests().empty());
  try {
    (void)load_checkpoint("org/absent");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(std::string(e.what()).find("org/absent"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ckptio::hub
