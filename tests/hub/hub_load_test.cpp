// The loaders reach the Hugging Face Hub only for "hf://" sources and only through the resolver
// the caller passes (SourceOptions::hub = hub::resolver()): "hf://org/name" (sharded: index then
// shards, read through the snapshot symlinks) and "hf://org/name/model.safetensors", here against
// the fake Hub on 127.0.0.1. A plain path that does not exist is Error(NotFound) and the fake Hub
// sees no request, whatever the options.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>

#include "ckptio/error.h"
#include "ckptio/hub.h"
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

LoadOptions with_hub() {
  LoadOptions o;
  o.source.hub = resolver();
  return o;
}

ErrorCode code_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  ADD_FAILURE() << "no error";
  return ErrorCode::Internal;
}

TEST_F(HubLoad, ShardedRepoByHfSpec) {
  const LoadedCheckpoint ck = load_checkpoint("hf://org/sharded", with_hub());
  ASSERT_EQ(ck.tensors.size(), 3u);
  EXPECT_EQ(values_of(ck.tensors.at("a")), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(values_of(ck.tensors.at("b")), (std::vector<float>{4, 5}));
  EXPECT_EQ(values_of(ck.tensors.at("c")), (std::vector<float>{6}));
  EXPECT_EQ(ck.report.source.kind, SourceKind::ShardedFolder);
  EXPECT_EQ(ck.report.source.allowed_root, tmp_ / "cache" / "models--org--sharded");
  EXPECT_FALSE(hub_->requests().empty());

  // Offline, the same spec loads from the cache.
  hub_->clear_requests();
  ScopedEnv offline("HF_HUB_OFFLINE", "1");
  EXPECT_EQ(load_checkpoint("hf://org/sharded", with_hub()).tensors.size(), 3u);
  EXPECT_TRUE(hub_->requests().empty());
}

TEST_F(HubLoad, SingleFileByPathInRepo) {
  const LoadedCheckpoint ck = load_checkpoint("hf://org/single/model.safetensors", with_hub());
  EXPECT_EQ(values_of(ck.tensors.at("w")), (std::vector<float>{7, 8}));
  EXPECT_EQ(values_of(load_checkpoint("hf://org/single", with_hub()).tensors.at("w")),
            (std::vector<float>{7, 8}));
  EXPECT_EQ(values_of(load_checkpoint("hf://org/single@main", with_hub()).tensors.at("w")),
            (std::vector<float>{7, 8}));
}

TEST_F(HubLoad, ConvertAndDiffTakeTheResolver) {
  ConvertOptions co;
  co.source.hub = resolver();
  const ConvertReport r = convert_checkpoint("hf://org/sharded", tmp_ / "out.safetensors", co);
  EXPECT_EQ(r.tensors, 3u);
  DiffOptions d;
  d.source.hub = resolver();
  EXPECT_TRUE(diff_checkpoints("hf://org/sharded", tmp_ / "out.safetensors", d).equal());
}

// A repo id typed as a path, a path in a repo, a typo: none is a Hub request, with or without the
// resolver, for every entry point.
TEST_F(HubLoad, PlainPathsThatDoNotExistAreNotFoundWithoutARequest) {
  for (const std::string path : {"org/sharded", "org/single/model.safetensors", "org/absent",
                                 "org/single@main"}) {
    for (const bool hub : {false, true}) {
      SCOPED_TRACE(path + (hub ? " with the resolver" : ""));
      const LoadOptions o = hub ? with_hub() : LoadOptions{};
      std::string message;
      EXPECT_EQ(code_of([&] { (void)load_checkpoint(path, o); }, &message), ErrorCode::NotFound);
      EXPECT_NE(message.find(path), std::string::npos) << message;
      EXPECT_NE(message.find("hf://"), std::string::npos) << message;
      EXPECT_EQ(code_of([&] { (void)resolve_checkpoint_source(path, o.source); }), ErrorCode::NotFound);
      EXPECT_EQ(code_of([&] { CheckpointReader::open(path, o.source); }), ErrorCode::NotFound);
      ConvertOptions co;
      co.source = o.source;
      EXPECT_EQ(code_of([&] { (void)convert_checkpoint(path, tmp_ / "x.safetensors", co); }),
                ErrorCode::NotFound);
    }
  }
  EXPECT_TRUE(hub_->requests().empty());
  EXPECT_FALSE(fs::exists(tmp_ / "cache"));
}

TEST_F(HubLoad, HfSpecWithoutTheResolverIsRefusedWithoutARequest) {
  std::string message;
  EXPECT_EQ(code_of([&] { (void)load_checkpoint("hf://org/sharded"); }, &message),
            ErrorCode::Unsupported);
  EXPECT_NE(message.find("hub::resolver()"), std::string::npos) << message;
  EXPECT_TRUE(hub_->requests().empty());
}

TEST_F(HubLoad, LocalPathsAreLocalAndMissingReposAreNotFound) {
  // A local folder with the same relative name as a repo is local; so is a training checkpoint's
  // component.
  const fs::path cwd = fs::current_path();
  fs::create_directories(tmp_ / "work" / "org" / "single");
  ckptio::testing::write_file(tmp_ / "work" / "org" / "single" / "model.safetensors",
                              safetensors_bytes({{"local", {1}}}));
  fs::current_path(tmp_ / "work");
  const LoadedCheckpoint ck = load_checkpoint("org/single", with_hub());
  fs::current_path(cwd);
  EXPECT_EQ(ck.tensors.count("local"), 1u);
  EXPECT_TRUE(hub_->requests().empty());

  std::string message;
  EXPECT_EQ(code_of([&] { (void)load_checkpoint("hf://org/absent", with_hub()); }, &message),
            ErrorCode::NotFound);
  EXPECT_NE(message.find("org/absent"), std::string::npos) << message;
  EXPECT_FALSE(hub_->requests().empty());  // that one was asked for
  EXPECT_EQ(code_of([&] { (void)load_checkpoint("hf://not a repo", with_hub()); }),
            ErrorCode::InvalidArgument);
}

}  // namespace
}  // namespace ckptio::hub
