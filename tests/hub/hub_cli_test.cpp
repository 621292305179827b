// `ckptio download` against the fake Hub: prints the local path(s), honours --revision,
// --local-dir, --offline and --quiet, and reports errors in the CLI's format. Skipped when the CLI
// has not been built (it links every area).
#include <gtest/gtest.h>

#include <memory>

#include "hub/fake_hub.h"
#include "support/cli_run.h"

namespace ckptio::hub {
namespace {

namespace fs = std::filesystem;

using ckptio::testing::CleanHubEnv;
using ckptio::testing::CliResult;
using ckptio::testing::commit_id;
using ckptio::testing::FakeHub;
using ckptio::testing::random_bytes;
using ckptio::testing::read_file;
using ckptio::testing::run_ckptio_line;
using ckptio::testing::TempDir;

class HubCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(fs::path(CKPTIO_BIN_DIR) / "ckptio")) {
      GTEST_SKIP() << "the ckptio CLI is not built";
    }
    clean_env_ = std::make_unique<CleanHubEnv>(tmp_ / "home");
    hub_ = std::make_unique<FakeHub>(tmp_ / "server");
    weights_ = random_bytes(50'000, 7);
    hub_->add_file("org/model", c1_, "model.safetensors", weights_, true);
    hub_->add_file("org/model", c1_, "config.json", "{}", false);
    hub_->add_file("org/model", c2_, "config.json", "{\"v\": 2}", false);
    hub_->set_ref("org/model", "main", c1_);
    hub_->set_ref("org/model", "v2", c2_);
    hub_->start();
  }

  CliResult run(const std::string& args) {
    return run_ckptio_line(args, {"HF_ENDPOINT=" + hub_->endpoint(),
                                  "HF_HUB_CACHE=" + (tmp_ / "cache").string()});
  }

  TempDir tmp_;
  std::unique_ptr<CleanHubEnv> clean_env_;
  std::unique_ptr<FakeHub> hub_;
  std::string c1_ = commit_id("cli1");
  std::string c2_ = commit_id("cli2");
  std::string weights_;
};

TEST_F(HubCli, DownloadPrintsPaths) {
  const fs::path snap = tmp_ / "cache" / "models--org--model" / "snapshots";
  CliResult r = run("download org/model");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, (snap / c1_).string() + "\n");
  EXPECT_EQ(r.err, "");  // stderr is not a terminal: no progress bar
  EXPECT_EQ(read_file(snap / c1_ / "model.safetensors"), weights_);

  r = run("download org/model config.json --revision v2 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, (snap / c2_ / "config.json").string() + "\n");

  r = run("download org/model config.json model.safetensors --local-dir " + (tmp_ / "local").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, (tmp_ / "local" / "config.json").string() + "\n" +
                       (tmp_ / "local" / "model.safetensors").string() + "\n");
  EXPECT_EQ(read_file(tmp_ / "local" / "model.safetensors"), weights_);
}

TEST_F(HubCli, OfflineAndErrors) {
  CliResult r = run("download org/model config.json --offline");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("ckptio: error: not_found: offline mode"), std::string::npos) << r.err;
  ASSERT_EQ(run("download org/model config.json").exit_code, 0);
  r = run("download org/model config.json --offline");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run("download org/absent");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("repository org/absent not found"), std::string::npos) << r.err;
  r = run("download /not/a/repo");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("invalid_argument"), std::string::npos) << r.err;
  EXPECT_EQ(run("download").exit_code, 2);
}

}  // namespace
}  // namespace ckptio::hub
