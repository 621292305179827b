// Whole models from the fake Hub: sharded (index first, then the shards), single-file, subfolders,
// spec strings, hostile indexes, two processes sharing a cache, and a cache laid out the way
// huggingface_hub lays it out.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <system_error>
#include <thread>

#include "ckptio/error.h"
#include "ckptio/hub.h"
#include "hub/fake_hub.h"
#include "core/thread_start.h"

namespace ckptio::hub {
namespace {

using ckptio::testing::CleanHubEnv;
using ckptio::testing::commit_id;
using ckptio::testing::FakeHub;
using ckptio::testing::json;
using ckptio::testing::random_bytes;
using ckptio::testing::read_file;
using ckptio::testing::run_python;
using ckptio::testing::sha256_hex;
using ckptio::testing::TempDir;
using ckptio::testing::write_file;

class HubModel : public ::testing::Test {
 protected:
  void SetUp() override {
    clean_env_ = std::make_unique<CleanHubEnv>(tmp_ / "home");
    hub_ = std::make_unique<FakeHub>(tmp_ / "server");
    json weight_map = json::object();
    for (int i = 0; i < 3; ++i) {
      const std::string name = "model-0000" + std::to_string(i + 1) + "-of-00003.safetensors";
      shards_.push_back(random_bytes(40'000 + static_cast<size_t>(i) * 1000, 10 + static_cast<uint32_t>(i)));
      shard_names_.push_back(name);
      hub_->add_file("org/sharded", c1_, name, shards_.back(), true);
      weight_map["layer" + std::to_string(i) + ".weight"] = name;
    }
    weight_map["layer0.bias"] = shard_names_[0];
    index_ = json{{"metadata", {{"total_size", 123000}}}, {"weight_map", weight_map}}.dump(2);
    hub_->add_file("org/sharded", c1_, "model.safetensors.index.json", index_, false);
    hub_->set_ref("org/sharded", "main", c1_);

    single_ = random_bytes(64'000, 42);
    hub_->add_file("org/single", c1_, "model.safetensors", single_, true);
    hub_->add_file("org/single", c1_, "unet/model.safetensors", shards_[0], true);
    hub_->set_ref("org/single", "main", c1_);
    hub_->add_file("org/single", c2_, "model.safetensors", shards_[1], true);
    hub_->set_ref("org/single", "v2", c2_);
    hub_->start();
  }

  HubOptions options() const {
    HubOptions o;
    o.cache_dir = tmp_ / "cache";
    o.endpoint = hub_->endpoint();
    o.progress = ProgressMode::Never;
    o.retry_base_delay = std::chrono::milliseconds(10);
    return o;
  }

  TempDir tmp_;
  std::unique_ptr<CleanHubEnv> clean_env_;
  std::unique_ptr<FakeHub> hub_;
  std::string c1_ = commit_id("m1");
  std::string c2_ = commit_id("m2");
  std::vector<std::string> shards_, shard_names_;
  std::string index_, single_;
};

TEST_F(HubModel, ADownloadThreadThatCannotStartIsAnErrorNotACrash) {
  HubOptions o = options();
  o.max_parallel_downloads = 3;  // two threads beside the caller's for the three shards
  for (int started_before : {0, 1}) {
    SCOPED_TRACE(started_before);
    // The first `started_before` threads start; the next one cannot.
    auto starts = std::make_shared<int>(0);
    set_thread_factory_for_testing([starts, started_before](std::function<void()> body) {
      if ((*starts)++ >= started_before) {
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                                "thread");
      }
      return std::thread(std::move(body));
    });
    try {
      download_model("org/sharded", "", o);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::IoError) << e.what();
      EXPECT_NE(e.message().find("cannot start a download thread"), std::string::npos) << e.message();
    }
  }
  set_thread_factory_for_testing({});
  const fs::path dir = download_model("org/sharded", "", o);
  for (size_t i = 0; i < shards_.size(); ++i) EXPECT_TRUE(read_file(dir / shard_names_[i]) == shards_[i]) << i;
}

TEST_F(HubModel, ShardedRepoDownloadsTheIndexThenEveryShard) {
  const fs::path dir = download_model("org/sharded", "", options());
  EXPECT_EQ(dir, tmp_ / "cache" / "models--org--sharded" / "snapshots" / c1_);
  EXPECT_EQ(read_file(dir / "model.safetensors.index.json"), index_);
  for (size_t i = 0; i < shards_.size(); ++i) EXPECT_EQ(read_file(dir / shard_names_[i]), shards_[i]);
  const auto heads = hub_->requests("hub", "HEAD");
  ASSERT_EQ(heads.size(), 4u);
  EXPECT_NE(heads[0]["path"].get<std::string>().find("/resolve/main/model.safetensors.index.json"),
            std::string::npos);
  // The shards are pinned to the index's commit.
  for (size_t i = 1; i < heads.size(); ++i) {
    EXPECT_NE(heads[i]["path"].get<std::string>().find("/resolve/" + c1_ + "/"), std::string::npos);
  }
  EXPECT_EQ(hub_->requests("cdn", "GET").size(), 3u);

  // Offline, the same call answers from the cache without a request.
  hub_->clear_requests();
  HubOptions o = options();
  o.offline = true;
  EXPECT_EQ(download_model("org/sharded", "", o), dir);
  EXPECT_TRUE(hub_->requests().empty());
}

TEST_F(HubModel, ShardsAreDownloadedInParallel) {
  // Slow bodies (about 0.5 s each): with parallel downloads a shard's GET starts while another
  // is still sending; sequential downloads could never overlap.
  hub_->set_faults(json::array({{{"id", "slow"}, {"server", "cdn"}, {"match", "-of-"},
                                 {"kind", "slow"}, {"chunk", 5'000}, {"delay", 0.05}}}));
  download_model("org/sharded", "", options());
  int open_now = 0;
  int most = 0;
  for (const auto& e : hub_->events()) {
    if (e["server"] != "cdn") continue;
    open_now += e.contains("event") ? -1 : 1;
    most = std::max(most, open_now);
  }
  EXPECT_GE(most, 2);
  EXPECT_EQ(hub_->requests("cdn", "GET").size(), 3u);
}

TEST_F(HubModel, ShardFailureFailsTheModelAndKeepsNothingPartial) {
  hub_->set_faults(json::array({{{"id", "bad"}, {"server", "cdn"}, {"match", "00002-of"},
                                 {"kind", "corrupt"}, {"after", 7}}}));
  EXPECT_THROW(download_model("org/sharded", "", options()), Error);
  const fs::path snap = tmp_ / "cache" / "models--org--sharded" / "snapshots" / c1_;
  EXPECT_FALSE(fs::exists(snap / shard_names_[1]));
  EXPECT_FALSE(fs::exists(tmp_ / "cache" / "models--org--sharded" / "blobs" / sha256_hex(shards_[1])));
  HubOptions o = options();
  o.offline = true;
  EXPECT_THROW(download_model("org/sharded", "", o), Error);
}

TEST_F(HubModel, SingleFileRepoAndSubfolders) {
  const fs::path dir = download_model("org/single", "", options());
  EXPECT_EQ(read_file(dir / "model.safetensors"), single_);
  EXPECT_TRUE(fs::exists(tmp_ / "cache" / "models--org--single" / ".no_exist" / c1_ /
                         "model.safetensors.index.json"));
  const fs::path unet = download_model("org/single", "unet", options());
  EXPECT_EQ(unet, dir / "unet");
  EXPECT_EQ(read_file(unet / "model.safetensors"), shards_[0]);

  HubOptions o = options();
  o.offline = true;
  EXPECT_EQ(download_model("org/single", "", o), dir);
  EXPECT_THROW(download_model("org/single", "vae", o), Error);
}

TEST_F(HubModel, MissingModelIsNotFoundNamingBothFiles) {
  hub_->add_file("org/empty", c1_, "README.md", "hi", false);
  hub_->set_ref("org/empty", "main", c1_);
  try {
    download_model("org/empty", "", options());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(e.message().find("model.safetensors.index.json"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("org/empty"), std::string::npos) << e.message();
  }
}

TEST_F(HubModel, SpecsResolveToFilesAndFolders) {
  EXPECT_FALSE(resolve_hub_source("/definitely/local/path.safetensors", options()));
  const auto folder = resolve_hub_source("org/sharded", options());
  ASSERT_TRUE(folder);
  EXPECT_TRUE(fs::is_directory(*folder));
  const auto file = resolve_hub_source("org/single/model.safetensors", options());
  ASSERT_TRUE(file);
  EXPECT_EQ(read_file(*file), single_);
  const auto tagged = resolve_hub_source("org/single@v2/model.safetensors", options());
  ASSERT_TRUE(tagged);
  EXPECT_EQ(read_file(*tagged), shards_[1]);
  const auto pinned = resolve_hub_source("hf://org/single@" + c2_, options());
  ASSERT_TRUE(pinned);
  EXPECT_EQ(read_file(*pinned / "model.safetensors"), shards_[1]);
  const auto sub = resolve_hub_source("org/single/unet", options());
  ASSERT_TRUE(sub);
  EXPECT_EQ(read_file(*sub / "model.safetensors"), shards_[0]);
}

TEST_F(HubModel, LocalDirReceivesIndexAndShards) {
  HubOptions o = options();
  o.local_dir = tmp_ / "local";
  EXPECT_EQ(download_model("org/sharded", "", o), tmp_ / "local");
  EXPECT_EQ(read_file(tmp_ / "local" / "model.safetensors.index.json"), index_);
  for (size_t i = 0; i < shards_.size(); ++i) {
    EXPECT_EQ(read_file(tmp_ / "local" / shard_names_[i]), shards_[i]);
  }
}

TEST_F(HubModel, HostileIndexCannotEscapeTheSnapshot) {
  const std::string evil = R"({"weight_map": {"w": "../../../../escape.safetensors"}})";
  hub_->add_file("org/evil", c1_, "model.safetensors.index.json", evil, false);
  hub_->set_ref("org/evil", "main", c1_);
  try {
    download_model("org/evil", "", options());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
  }
  hub_->add_file("org/evil2", c1_, "model.safetensors.index.json", "{not json", false);
  hub_->set_ref("org/evil2", "main", c1_);
  EXPECT_THROW(download_model("org/evil2", "", options()), Error);
  EXPECT_FALSE(fs::exists(tmp_ / "escape.safetensors"));
}

TEST_F(HubModel, TwoProcessesDownloadingTheSameFileBothSucceed) {
  hub_->set_faults(json::array({{{"id", "slow"}, {"server", "cdn"}, {"match", "model"},
                                 {"kind", "slow"}, {"chunk", 8'000}, {"delay", 0.05}}}));
  const std::string tool = std::string(CKPTIO_BIN_DIR) + "/hub_fetch_tool";
  const std::string cmd = tool + " " + hub_->endpoint() + " " + (tmp_ / "cache").string() +
                          " org/single model.safetensors";
  std::FILE* a = ::popen(cmd.c_str(), "r");
  std::FILE* b = ::popen(cmd.c_str(), "r");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const auto read_all = [](std::FILE* f) {
    std::string s;
    char buf[512];
    while (std::fgets(buf, sizeof buf, f)) s += buf;
    return s;
  };
  const std::string out_a = read_all(a);
  const std::string out_b = read_all(b);
  EXPECT_EQ(::pclose(a), 0);
  EXPECT_EQ(::pclose(b), 0);
  EXPECT_EQ(out_a, out_b);
  const fs::path path = out_a.substr(0, out_a.find('\n'));
  EXPECT_EQ(read_file(path), single_);
  for (const auto& e : fs::directory_iterator(tmp_ / "cache" / "models--org--single" / "blobs")) {
    EXPECT_EQ(e.path().filename().string().find('.'), std::string::npos) << e.path();
  }
  EXPECT_EQ(hub_->requests("cdn", "GET").size(), 1u);
}

// The read-only lookup from huggingface_hub's try_to_load_from_cache, in Python, finds what ckptio
// downloaded; and a cache written the way huggingface_hub writes it serves ckptio offline.
TEST_F(HubModel, CacheIsSharedWithHuggingfaceHub) {
  const fs::path ours = download_file("org/single", "model.safetensors", options());
  const std::string lookup = R"(
import os, sys
cache, repo, filename, revision = sys.argv[1:5]
repo_cache = os.path.join(cache, "models--" + repo.replace("/", "--"))
refs_dir = os.path.join(repo_cache, "refs")
if os.path.isdir(refs_dir):
    ref = os.path.join(refs_dir, revision)
    if os.path.isfile(ref):
        with open(ref) as f:
            revision = f.read()
cached = os.path.join(repo_cache, "snapshots", revision, filename)
print(cached if os.path.isfile(cached) else "MISSING")
)";
  ASSERT_EQ(run_python(tmp_.path(), lookup,
                       (tmp_ / "cache").string() + " org/single model.safetensors main > " +
                           (tmp_ / "lookup.txt").string()),
            0);
  EXPECT_EQ(read_file(tmp_ / "lookup.txt"), ours.string() + "\n");

  // huggingface_hub's writer: blob by etag, relpath symlink, refs/main without newline.
  const std::string writer = R"(
import hashlib, os, sys
cache = sys.argv[1]
repo = os.path.join(cache, "models--hfhub--written")
data = bytes(range(256)) * 100
etag = hashlib.sha256(data).hexdigest()
commit = "0123456789abcdef0123456789abcdef01234567"
os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
with open(os.path.join(repo, "blobs", etag), "wb") as f:
    f.write(data)
pointer = os.path.join(repo, "snapshots", commit, "text_encoder", "model.safetensors")
os.makedirs(os.path.dirname(pointer), exist_ok=True)
os.symlink(os.path.relpath(os.path.join(repo, "blobs", etag), os.path.dirname(pointer)), pointer)
os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
with open(os.path.join(repo, "refs", "main"), "w") as f:
    f.write(commit)
)";
  ASSERT_EQ(run_python(tmp_.path(), writer, (tmp_ / "cache").string()), 0);
  HubOptions o = options();
  o.offline = true;
  const fs::path theirs = download_file("hfhub/written", "text_encoder/model.safetensors", o);
  std::string expected;
  for (int r = 0; r < 100; ++r) {
    for (int i = 0; i < 256; ++i) expected += static_cast<char>(i);
  }
  EXPECT_EQ(read_file(theirs), expected);
  // Our link for the same depth is byte-identical to the one os.path.relpath made.
  hub_->add_file("org/single", c1_, "text_encoder/model.safetensors", single_, true);
  const fs::path nested = download_file("org/single", "text_encoder/model.safetensors", options());
  EXPECT_EQ(fs::read_symlink(nested), fs::path("../../../blobs/" + sha256_hex(single_)));
  EXPECT_EQ(fs::read_symlink(theirs).string().substr(0, 15), "../../../blobs/");
}

}  // namespace
}  // namespace ckptio::hub
