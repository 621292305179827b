// Downloads against the fake Hub on 127.0.0.1: the cache layout huggingface_hub expects, offline
// use of it, tokens and redirects, resume, verification, error codes, retries and cache fallback.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <memory>
#include <stdexcept>
#include <thread>

#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/hub.h"
#include "hub/fake_hub.h"

namespace ckptio::hub {
namespace {

using ckptio::testing::CleanHubEnv;
using ckptio::testing::commit_id;
using ckptio::testing::FakeHub;
using ckptio::testing::git_sha1_hex;
using ckptio::testing::json;
using ckptio::testing::random_bytes;
using ckptio::testing::read_file;
using ckptio::testing::ScopedEnv;
using ckptio::testing::sha256_hex;
using ckptio::testing::TempDir;
using ckptio::testing::write_file;

constexpr const char* kRepo = "org/model";

class HubDownload : public ::testing::Test {
 protected:
  void SetUp() override {
    clean_env_ = std::make_unique<CleanHubEnv>(tmp_ / "home");
    hub_ = std::make_unique<FakeHub>(tmp_ / "server");
    weights_ = random_bytes(300'000, 1);
    weights_v2_ = random_bytes(200'000, 2);
    nested_ = random_bytes(5'000, 3);
    config_ = R"({"hidden_size": 64})";
    hub_->add_file(kRepo, c1_, "model.safetensors", weights_, /*lfs=*/true);
    hub_->add_file(kRepo, c1_, "config.json", config_, /*lfs=*/false);
    hub_->add_file(kRepo, c1_, "sub/dir/weights.bin", nested_, /*lfs=*/true);
    hub_->add_file(kRepo, c2_, "model.safetensors", weights_v2_, /*lfs=*/true);
    hub_->set_ref(kRepo, "main", c1_);
    hub_->set_ref(kRepo, "v1", c1_);
    hub_->set_ref(kRepo, "refs/pr/1", c2_);
    hub_->start();
  }

  HubOptions options() const {
    HubOptions o;
    o.cache_dir = tmp_ / "cache";
    o.endpoint = hub_->endpoint();
    o.progress = ProgressMode::Never;
    o.retry_base_delay = std::chrono::milliseconds(10);
    o.metadata_timeout = std::chrono::seconds(5);
    o.stall_timeout = std::chrono::seconds(5);
    return o;
  }
  fs::path repo_dir() const { return tmp_ / "cache" / "models--org--model"; }

  // Names under blobs/ that are not final blobs (temp or .incomplete files).
  std::vector<std::string> leftovers() const {
    std::vector<std::string> out;
    if (!fs::exists(repo_dir() / "blobs")) return out;
    for (const auto& e : fs::directory_iterator(repo_dir() / "blobs")) {
      const std::string name = e.path().filename().string();
      if (name.find('.') != std::string::npos) out.push_back(name);
    }
    return out;
  }

  TempDir tmp_;
  std::unique_ptr<CleanHubEnv> clean_env_;
  std::unique_ptr<FakeHub> hub_;
  std::string c1_ = commit_id("c1");
  std::string c2_ = commit_id("c2");
  std::string weights_, weights_v2_, nested_, config_;
};

TEST_F(HubDownload, LfsAndGitFilesLandInTheSharedCacheLayout) {
  const fs::path model = download_file(kRepo, "model.safetensors", options());
  const fs::path config = download_file(kRepo, "config.json", options());
  const fs::path nested = download_file(kRepo, "sub/dir/weights.bin", options());

  EXPECT_EQ(model, repo_dir() / "snapshots" / c1_ / "model.safetensors");
  EXPECT_EQ(read_file(model), weights_);
  EXPECT_EQ(read_file(config), config_);
  EXPECT_EQ(read_file(nested), nested_);

  // Snapshot entries are relative symlinks to blobs named by etag (sha256 for LFS, git sha1 else).
  EXPECT_TRUE(fs::is_symlink(model));
  EXPECT_EQ(fs::read_symlink(model), fs::path("../../blobs/" + sha256_hex(weights_)));
  EXPECT_EQ(fs::read_symlink(config), fs::path("../../blobs/" + git_sha1_hex(config_)));
  EXPECT_EQ(fs::read_symlink(nested), fs::path("../../../../blobs/" + sha256_hex(nested_)));
  EXPECT_EQ(read_file(repo_dir() / "blobs" / sha256_hex(weights_)), weights_);
  EXPECT_EQ(read_file(repo_dir() / "refs" / "main"), c1_);  // no trailing newline
  EXPECT_TRUE(fs::exists(tmp_ / "cache" / ".locks" / "models--org--model" /
                         (sha256_hex(weights_) + ".lock")));
  EXPECT_TRUE(leftovers().empty());

  // LFS: HEAD on the Hub, bytes from the CDN; git files come from the Hub itself.
  const auto cdn_gets = hub_->requests("cdn", "GET");
  ASSERT_EQ(cdn_gets.size(), 2u);
  EXPECT_EQ(cdn_gets[0]["range"], nullptr);
  EXPECT_EQ(hub_->requests("hub", "HEAD").size(), 3u);
}

TEST_F(HubDownload, CachedFileNeedsOnlyTheMetadataCallAndCommitsNoneAtAll) {
  download_file(kRepo, "model.safetensors", options());
  hub_->clear_requests();
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
  EXPECT_EQ(hub_->requests("hub", "HEAD").size(), 1u);
  EXPECT_TRUE(hub_->requests("cdn", "GET").empty());
  hub_->clear_requests();
  HubOptions o = options();
  o.revision = c1_;
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", o)), weights_);
  EXPECT_TRUE(hub_->requests().empty());
}

TEST_F(HubDownload, OfflineModeUsesTheCacheAndNamesWhatIsMissing) {
  download_file(kRepo, "model.safetensors", options());
  hub_->clear_requests();
  HubOptions o = options();
  o.offline = true;
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", o)), weights_);
  {
    ScopedEnv offline("HF_HUB_OFFLINE", "1");
    EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
    try {
      download_file(kRepo, "config.json", options());
      FAIL() << "expected NotFound";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NotFound);
      EXPECT_NE(e.message().find("offline"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("org/model"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("'main'"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("config.json"), std::string::npos) << e.message();
    }
  }
  EXPECT_TRUE(hub_->requests().empty());
}

TEST_F(HubDownload, TokenGoesToTheHubButNeverToTheCdn) {
  ScopedEnv token("HF_TOKEN", "hf_secret");
  download_file(kRepo, "model.safetensors", options());
  download_file(kRepo, "config.json", options());
  for (const auto& r : hub_->requests("hub", "HEAD")) EXPECT_EQ(r["auth"], "Bearer hf_secret");
  for (const auto& r : hub_->requests("hub", "GET")) EXPECT_EQ(r["auth"], "Bearer hf_secret");
  const auto cdn = hub_->requests("cdn", "GET");
  ASSERT_EQ(cdn.size(), 1u);
  EXPECT_EQ(cdn[0]["auth"], nullptr);
}

TEST_F(HubDownload, GatedRepoNeedsTheToken) {
  hub_->add_file("org/gated", c1_, "model.safetensors", weights_, true);
  hub_->set_ref("org/gated", "main", c1_);
  hub_->set_repo_field("org/gated", "gated_token", "hf_ok");
  try {
    download_file("org/gated", "model.safetensors", options());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
    EXPECT_NE(e.message().find("gated"), std::string::npos) << e.message();
  }
  HubOptions o = options();
  o.token = "hf_ok";
  EXPECT_EQ(read_file(download_file("org/gated", "model.safetensors", o)), weights_);
}

TEST_F(HubDownload, ErrorCodesBecomeClearErrors) {
  const auto expect_not_found = [&](std::string_view repo, std::string_view file,
                                    const std::string& revision, const std::string& words) {
    HubOptions o = options();
    o.revision = revision;
    try {
      download_file(repo, file, o);
      ADD_FAILURE() << "expected NotFound for " << repo << "/" << file;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NotFound) << e.what();
      EXPECT_NE(e.message().find(words), std::string::npos) << e.message();
    }
  };
  expect_not_found("org/absent", "model.safetensors", "", "repository org/absent not found");
  expect_not_found(kRepo, "model.safetensors", "nope", "revision 'nope' not found");
  expect_not_found(kRepo, "missing.bin", "", "'missing.bin' in org/model at revision 'main' does not exist");
  // EntryNotFound with X-Repo-Commit leaves a .no_exist marker, read back offline.
  EXPECT_TRUE(fs::exists(repo_dir() / ".no_exist" / c1_ / "missing.bin"));
  HubOptions o = options();
  o.offline = true;
  try {
    download_file(kRepo, "missing.bin", o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(e.message().find(".no_exist"), std::string::npos) << e.message();
  }
}

TEST_F(HubDownload, DroppedConnectionResumesWithRange) {
  hub_->set_faults(json::array({{{"id", "drop"}, {"server", "cdn"}, {"method", "GET"},
                                 {"match", "model.safetensors"}, {"kind", "drop"},
                                 {"after", 100'000}, {"times", 1}}}));
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
  const auto gets = hub_->requests("cdn", "GET");
  ASSERT_EQ(gets.size(), 2u);
  EXPECT_EQ(gets[0]["range"], nullptr);
  EXPECT_EQ(gets[1]["range"], "bytes=100000-");
  EXPECT_EQ(gets[1]["status"], 206);
  EXPECT_TRUE(leftovers().empty());
}

TEST_F(HubDownload, ServerIgnoringRangeRestartsFromZero) {
  hub_->set_faults(json::array(
      {{{"id", "drop"}, {"server", "cdn"}, {"match", "model"}, {"kind", "drop"}, {"after", 50'000}, {"times", 1}},
       {{"id", "norange"}, {"server", "cdn"}, {"match", "model"}, {"kind", "ignore_range"}}}));
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
  const auto gets = hub_->requests("cdn", "GET");
  ASSERT_EQ(gets.size(), 2u);
  EXPECT_EQ(gets[1]["range"], "bytes=50000-");
  EXPECT_EQ(gets[1]["status"], 200);
}

// The first byte position a GET asked for (0 without Range).
uint64_t range_start(const json& request) {
  if (request["range"].is_null()) return 0;
  const std::string r = request["range"].get<std::string>();  // "bytes=N-"
  return std::stoull(r.substr(r.find('=') + 1));
}

// The stalled transfer is held by the server until the test ends, so only the client's stall
// timeout can end it. How many requests a slow machine needs is not asserted: a normal request
// that happens to take longer than the short timeout is one more retry, which is the behaviour
// under test too.
TEST_F(HubDownload, StalledTransferTimesOutAndResumes) {
  hub_->set_faults(json::array({{{"id", "stall"}, {"server", "cdn"}, {"match", "model"},
                                 {"kind", "stall"}, {"after", 70'000}, {"until_released", true},
                                 {"times", 1}}}));
  HubOptions o = options();
  o.stall_timeout = std::chrono::seconds(1);
  EXPECT_TRUE(read_file(download_file(kRepo, "model.safetensors", o)) == weights_);
  hub_->release("stall");
  const auto gets = hub_->requests("cdn", "GET");
  ASSERT_GE(gets.size(), 2u);
  EXPECT_EQ(gets[0]["fault"], "stall");
  EXPECT_EQ(gets[0]["range"], nullptr);
  // The next request resumed after the bytes the stalled one delivered, and none started over.
  EXPECT_GT(range_start(gets[1]), 0u);
  EXPECT_LE(range_start(gets[1]), 70'000u);
  for (size_t i = 2; i < gets.size(); ++i) EXPECT_GE(range_start(gets[i]), range_start(gets[i - 1])) << i;
}

TEST_F(HubDownload, MetadataTimeoutIsRetried) {
  hub_->set_faults(json::array({{{"id", "hang"}, {"server", "hub"}, {"method", "HEAD"},
                                 {"match", "config"}, {"kind", "hang"}, {"until_released", true},
                                 {"times", 1}}}));
  HubOptions o = options();
  o.metadata_timeout = std::chrono::seconds(1);
  EXPECT_EQ(read_file(download_file(kRepo, "config.json", o)), config_);
  hub_->release("hang");
  const auto heads = hub_->requests("hub", "HEAD");
  ASSERT_GE(heads.size(), 2u);  // the hung one, then as many as the timeout needed
  EXPECT_EQ(heads[0]["fault"], "hang");
  for (size_t i = 1; i < heads.size(); ++i) EXPECT_FALSE(heads[i].contains("fault")) << i;
}

TEST_F(HubDownload, WrongBytesFailTheSha256CheckAndLeaveNothingBehind) {
  hub_->set_faults(json::array({{{"id", "bad"}, {"server", "cdn"}, {"match", "model"},
                                 {"kind", "corrupt"}, {"after", 1234}}}));
  try {
    download_file(kRepo, "model.safetensors", options());
    FAIL() << "expected Mismatch";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Mismatch);
    EXPECT_NE(e.message().find("SHA-256"), std::string::npos) << e.message();
  }
  EXPECT_FALSE(fs::exists(repo_dir() / "blobs" / sha256_hex(weights_)));
  EXPECT_FALSE(fs::exists(repo_dir() / "snapshots" / c1_ / "model.safetensors"));
  EXPECT_FALSE(fs::is_symlink(repo_dir() / "snapshots" / c1_ / "model.safetensors"));
  EXPECT_TRUE(leftovers().empty());
  // Once the CDN is healthy the same call succeeds.
  hub_->set_faults(json::array());
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
}

TEST_F(HubDownload, ServerErrorsAreRetriedWithBackoff) {
  hub_->set_faults(json::array({{{"id", "e500"}, {"server", "cdn"}, {"match", "model"},
                                 {"kind", "status"}, {"status", 503}, {"times", 2}},
                                {{"id", "h500"}, {"server", "hub"}, {"method", "HEAD"},
                                 {"match", "model"}, {"kind", "status"}, {"status", 500}, {"times", 1}}}));
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
  EXPECT_EQ(hub_->requests("hub", "HEAD").size(), 2u);
  EXPECT_EQ(hub_->requests("cdn", "GET").size(), 3u);
}

TEST_F(HubDownload, PersistentServerErrorFallsBackToTheCache) {
  hub_->set_faults(json::array({{{"id", "h500"}, {"server", "hub"}, {"match", ""},
                                 {"kind", "status"}, {"status", 502}}}));
  HubOptions o = options();
  o.max_attempts = 2;
  try {
    download_file(kRepo, "model.safetensors", o);
    FAIL() << "nothing cached yet";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
    EXPECT_NE(e.message().find("502"), std::string::npos) << e.message();
  }
  hub_->set_faults(json::array());
  download_file(kRepo, "model.safetensors", o);
  hub_->set_faults(json::array({{{"id", "h500"}, {"server", "hub"}, {"match", ""},
                                 {"kind", "status"}, {"status", 502}}}));
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", o)), weights_);
  // 404s are answers, not failures: no fallback for a file the Hub says is absent.
  hub_->set_faults(json::array({{{"id", "e404"}, {"server", "hub"}, {"match", ""},
                                 {"kind", "status"}, {"status", 404}, {"error_code", "EntryNotFound"}}}));
  EXPECT_THROW(download_file(kRepo, "model.safetensors", o), Error);
}

TEST_F(HubDownload, UnreachableHubFallsBackToTheCache) {
  download_file(kRepo, "model.safetensors", options());
  hub_->stop();
  HubOptions o = options();
  o.max_attempts = 2;
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", o)), weights_);
  try {
    download_file(kRepo, "config.json", o);
    FAIL() << "not cached";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
    EXPECT_NE(e.message().find("cannot reach"), std::string::npos) << e.message();
  }
}

TEST_F(HubDownload, LeftoverIncompleteFromAKilledProcessIsResumed) {
  const std::string sha = sha256_hex(weights_);
  fs::create_directories(repo_dir() / "blobs");
  write_file(repo_dir() / "blobs" / (sha + ".deadbeef.incomplete"), weights_.substr(0, 123'456));
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
  const auto gets = hub_->requests("cdn", "GET");
  ASSERT_EQ(gets.size(), 1u);
  EXPECT_EQ(gets[0]["range"], "bytes=123456-");
  EXPECT_TRUE(leftovers().empty());
}

TEST_F(HubDownload, CorruptLeftoverIsDiscardedAndDownloadedAgain) {
  const std::string sha = sha256_hex(weights_);
  fs::create_directories(repo_dir() / "blobs");
  std::string bad = weights_.substr(0, 100'000);
  bad[10] ^= 0x55;
  write_file(repo_dir() / "blobs" / (sha + ".0badf00d.incomplete"), bad);
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
  const auto gets = hub_->requests("cdn", "GET");
  ASSERT_EQ(gets.size(), 2u);
  EXPECT_EQ(gets[0]["range"], "bytes=100000-");
  EXPECT_EQ(gets[1]["range"], nullptr);
  EXPECT_TRUE(leftovers().empty());
}

// Holds a blob's cache lock the way another process downloading that blob does (its own flock).
class HeldLock {
 public:
  explicit HeldLock(const fs::path& path) {
    fs::create_directories(path.parent_path());
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX | LOCK_NB) != 0) throw std::runtime_error("cannot lock " + path.string());
  }
  ~HeldLock() { ::close(fd_); }
  HeldLock(const HeldLock&) = delete;
  HeldLock& operator=(const HeldLock&) = delete;

 private:
  int fd_ = -1;
};

TEST_F(HubDownload, AWaiterThatGivesUpNeverTakesOverTheLockHoldersLiveDownload) {
  const std::string sha = sha256_hex(weights_);
  const HeldLock other(tmp_ / "cache" / ".locks" / "models--org--model" / (sha + ".lock"));
  fs::create_directories(repo_dir() / "blobs");
  const std::string live = sha + ".1ive0000.incomplete";  // the lock holder is writing this
  write_file(repo_dir() / "blobs" / live, weights_.substr(0, 123'456));
  HubOptions o = options();
  o.lock_wait = std::chrono::milliseconds(0);  // stands for "waited 5 minutes"
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", o)), weights_);
  const auto gets = hub_->requests("cdn", "GET");
  ASSERT_EQ(gets.size(), 1u);
  EXPECT_EQ(gets[0]["range"], nullptr) << "resumed the other process's partial file";
  // The owner's file is where it left it, so its own final rename will work.
  EXPECT_TRUE(fs::exists(repo_dir() / "blobs" / live) && read_file(repo_dir() / "blobs" / live) == weights_.substr(0, 123'456));
  EXPECT_EQ(leftovers(), std::vector<std::string>{live});
}

TEST_F(HubDownload, ADownloadWithoutTheLockLeavesNothingForOthersToAdopt) {
  const std::string sha = sha256_hex(weights_);
  // 100,000 bytes, then only errors.
  hub_->set_faults(json::array({{{"id", "drop"}, {"server", "cdn"}, {"match", "model"},
                                 {"kind", "drop"}, {"after", 100'000}, {"times", 1}},
                                {{"id", "e503"}, {"server", "cdn"}, {"match", "model"},
                                 {"kind", "status"}, {"status", 503}}}));
  HubOptions o = options();
  o.lock_wait = std::chrono::milliseconds(0);
  o.max_attempts = 2;
  {
    const HeldLock other(tmp_ / "cache" / ".locks" / "models--org--model" / (sha + ".lock"));
    try {
      download_file(kRepo, "model.safetensors", o);
      FAIL() << "every transfer is dropped";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::IoError) << e.what();
    }
    // A kept partial would be adopted by the lock holder's next attempt while this process
    // might still be writing it.
    EXPECT_TRUE(leftovers().empty());
  }
  // The partial of a download that gave up waiting may be live even when the lock is free: the
  // lock holder leaves it alone.
  const std::string unlocked = sha + ".abcd1234.unlocked.incomplete";
  write_file(repo_dir() / "blobs" / unlocked, weights_.substr(0, 100'000));
  hub_->set_faults(json::array());
  hub_->clear_requests();
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", options())), weights_);
  const auto gets = hub_->requests("cdn", "GET");
  ASSERT_EQ(gets.size(), 1u);
  EXPECT_EQ(gets[0]["range"], nullptr);
  EXPECT_EQ(leftovers(), std::vector<std::string>{unlocked});
}

TEST_F(HubDownload, TwoThreadsDownloadingTheSameFileShareOneTransfer) {
  hub_->set_faults(json::array({{{"id", "slow"}, {"server", "cdn"}, {"match", "model"},
                                 {"kind", "slow"}, {"chunk", 30'000}, {"delay", 0.05}}}));
  fs::path a, b;
  std::thread t1([&] { a = download_file(kRepo, "model.safetensors", options()); });
  std::thread t2([&] { b = download_file(kRepo, "model.safetensors", options()); });
  t1.join();
  t2.join();
  EXPECT_EQ(a, b);
  EXPECT_EQ(read_file(a), weights_);
  EXPECT_EQ(hub_->requests("cdn", "GET").size(), 1u);  // the lock kept the second one waiting
  EXPECT_TRUE(leftovers().empty());
}

TEST_F(HubDownload, RevisionsTagsAndPullRequests) {
  HubOptions o = options();
  o.revision = "refs/pr/1";
  const fs::path pr = download_file(kRepo, "model.safetensors", o);
  EXPECT_EQ(read_file(pr), weights_v2_);
  EXPECT_EQ(pr, repo_dir() / "snapshots" / c2_ / "model.safetensors");
  EXPECT_EQ(read_file(repo_dir() / "refs" / "refs" / "pr" / "1"), c2_);
  EXPECT_NE(hub_->requests("hub", "HEAD")[0]["path"].get<std::string>().find("/resolve/refs%2Fpr%2F1/"),
            std::string::npos);
  o.revision = "v1";
  EXPECT_EQ(read_file(download_file(kRepo, "model.safetensors", o)), weights_);
  EXPECT_EQ(read_file(repo_dir() / "refs" / "v1"), c1_);

  // main moves to a new commit: a new snapshot, refs/main follows, the old snapshot stays.
  const fs::path old_main = download_file(kRepo, "model.safetensors", options());
  hub_->set_ref(kRepo, "main", c2_);
  const fs::path new_main = download_file(kRepo, "model.safetensors", options());
  EXPECT_NE(old_main, new_main);
  EXPECT_EQ(read_file(new_main), weights_v2_);
  EXPECT_EQ(read_file(old_main), weights_);
  EXPECT_EQ(read_file(repo_dir() / "refs" / "main"), c2_);
}

TEST_F(HubDownload, RenamedRepoFollowsTheRelativeRedirect) {
  hub_->set_repo_field("org/old-name", "renamed_to", kRepo);
  const fs::path p = download_file("org/old-name", "config.json", options());
  EXPECT_EQ(read_file(p), config_);
  EXPECT_EQ(p, tmp_ / "cache" / "models--org--old-name" / "snapshots" / c1_ / "config.json");
}

TEST_F(HubDownload, WeakEtagIsNormalised) {
  hub_->add_file(kRepo, c1_, "weak.json", "{}", false, /*weak_etag=*/true);
  const fs::path p = download_file(kRepo, "weak.json", options());
  EXPECT_EQ(fs::read_symlink(p), fs::path("../../blobs/" + git_sha1_hex("{}")));
}

TEST_F(HubDownload, LocalDirGetsACopy) {
  HubOptions o = options();
  o.local_dir = tmp_ / "out";
  const fs::path p = download_file(kRepo, "sub/dir/weights.bin", o);
  EXPECT_EQ(p, tmp_ / "out" / "sub" / "dir" / "weights.bin");
  EXPECT_FALSE(fs::is_symlink(p));
  EXPECT_EQ(read_file(p), nested_);
  EXPECT_EQ(read_file(repo_dir() / "snapshots" / c1_ / "sub/dir/weights.bin"), nested_);
}

TEST_F(HubDownload, InvalidArgumentsAreRefusedBeforeAnyRequest) {
  EXPECT_THROW(download_file("not-a-repo", "model.safetensors", options()), Error);
  EXPECT_THROW(download_file(kRepo, "../escape.bin", options()), Error);
  EXPECT_THROW(download_file(kRepo, "/abs.bin", options()), Error);
  HubOptions o = options();
  o.revision = "../../x";
  EXPECT_THROW(download_file(kRepo, "model.safetensors", o), Error);
  EXPECT_TRUE(hub_->requests().empty());
}

// The cache lock, the snapshot symlink, the probes and the token file all go through the Env, so
// a fault Env reaches each of them.
TEST_F(HubDownload, EveryCacheFileAccessGoesThroughTheEnv) {
  write_file(tmp_ / "token", "hf_from_file\n");
  ScopedEnv token_path("HF_TOKEN_PATH", (tmp_ / "token").string().c_str());
  io::FaultInjectingEnv env;
  HubOptions o = options();
  o.env = &env;
  env.inject(io::FaultOp::Symlink, 1, ENOSPC);
  try {
    download_file(kRepo, "model.safetensors", o);
    FAIL() << "the symlink fault did not reach the download";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NoSpace) << e.what();
    EXPECT_NE(e.message().find("symlink"), std::string::npos) << e.message();
  }
  EXPECT_FALSE(fs::exists(repo_dir() / "snapshots" / c1_ / "model.safetensors"));
  EXPECT_GE(env.count(io::FaultOp::Lock), 1u);
  for (const auto& r : hub_->requests("hub", "HEAD")) EXPECT_EQ(r["auth"], "Bearer hf_from_file");

  // A token file the Env cannot read means no token, not a failure.
  hub_->clear_requests();
  env.inject({.op = io::FaultOp::Open, .nth = 1, .error = EACCES, .path_contains = "token"});
  const fs::path p = download_file(kRepo, "model.safetensors", o);
  EXPECT_EQ(read_file(p), weights_);
  const auto heads = hub_->requests("hub", "HEAD");
  ASSERT_FALSE(heads.empty());
  EXPECT_EQ(heads[0]["auth"], nullptr);
  EXPECT_EQ(env.count(io::FaultOp::Symlink), 2u);
}

}  // namespace
}  // namespace ckptio::hub
