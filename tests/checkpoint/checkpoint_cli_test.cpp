// The CLI on experiment and checkpoint folders: ckptio ls / prune / verify [--full] / inspect.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "checkpoint/training_state_fixture.h"
#include "ckptio/checkpoint_io.h"
#include "support/cli_run.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;

struct CliRun {
  int status = -1;
  std::string out;  // stdout then stderr
};

CliRun ckptio_cli(const std::string& args) {
  const testing::CliResult r = testing::run_ckptio_line(args);
  return {r.exit_code, r.all()};
}

class CheckpointCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(fs::path(CKPTIO_BIN_DIR) / "ckptio")) GTEST_SKIP() << "ckptio not built";
    CheckpointOptions o;
    o.sync = false;
    CheckpointIO io(exp_, o);
    for (int64_t step : {10, 20, 30}) io.save(testing::make_training_state(step));
  }
  testing::TempDir dir_;
  fs::path exp_ = dir_ / "exp";
};

TEST_F(CheckpointCli, LsShowsEveryCheckpointAndMarksLatest) {
  fs::create_directories(exp_ / ".epoch3-global_step40.tmp-zz9");
  const CliRun r = ckptio_cli("ls " + exp_.string());
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("epoch3-global_step30"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("committed (latest)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("incomplete"), std::string::npos) << r.out;
  const CliRun j = ckptio_cli("ls --json " + exp_.string());
  ASSERT_EQ(j.status, 0) << j.out;
  const auto doc = nlohmann::json::parse(j.out);
  ASSERT_EQ(doc.size(), 4u);
  EXPECT_EQ(doc[2]["global_step"], 30);
  EXPECT_EQ(doc[2]["latest"], true);
  EXPECT_EQ(doc[2]["state"], "committed");
  EXPECT_GT(doc[2]["size_bytes"].get<uint64_t>(), 1000u);
  EXPECT_EQ(doc[3]["temp"], true);
}

TEST_F(CheckpointCli, PruneKeepsTheNewest) {
  const CliRun r = ckptio_cli("prune " + exp_.string() + " --keep 1");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_FALSE(fs::exists(exp_ / "epoch1-global_step10"));
  EXPECT_FALSE(fs::exists(exp_ / "epoch2-global_step20"));
  EXPECT_TRUE(fs::exists(exp_ / "epoch3-global_step30"));
  EXPECT_EQ(ckptio_cli("prune " + exp_.string() + " --keep 0").status, 2);
  EXPECT_EQ(ckptio_cli("prune " + exp_.string() + " --keep -1").status, 2);  // not 2^64-1
}

TEST_F(CheckpointCli, VerifyFullNamesTheFileWithAFlippedBit) {
  const fs::path ckpt = exp_ / "epoch3-global_step30";
  EXPECT_EQ(ckptio_cli("verify --full " + ckpt.string()).status, 0);
  // Flip one bit in every file in turn: verify --full names exactly that file.
  for (const auto& entry : fs::recursive_directory_iterator(ckpt)) {
    if (!entry.is_regular_file() || entry.path().filename() == "ckptio.manifest.json") continue;
    const std::string rel = fs::relative(entry.path(), ckpt).generic_string();
    std::string bytes = testing::read_file(entry.path());
    ASSERT_FALSE(bytes.empty());
    const size_t at = bytes.size() * 2 / 3;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x04);
    testing::write_file(entry.path(), bytes);
    const CliRun r = ckptio_cli("verify --full " + ckpt.string());
    EXPECT_EQ(r.status, 1) << rel << "\n" << r.out;
    EXPECT_NE(r.out.find("FAIL " + rel + ": checksum mismatch"), std::string::npos) << r.out;
    EXPECT_EQ(ckptio_cli("verify " + ckpt.string()).status, 0) << "sizes still match";
    bytes[at] = static_cast<char>(bytes[at] ^ 0x04);
    testing::write_file(entry.path(), bytes);
  }
  EXPECT_EQ(ckptio_cli("verify --full " + ckpt.string()).status, 0);
}

TEST_F(CheckpointCli, InspectShowsRunningStatesAndComponents) {
  const fs::path ckpt = exp_ / "epoch2-global_step20";
  const CliRun r = ckptio_cli("inspect --json " + ckpt.string());
  ASSERT_EQ(r.status, 0) << r.out;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["running_states"]["global_step"], 20);
  EXPECT_EQ(doc["kind"], "ckptio");
  EXPECT_EQ(doc["sampler"]["index"], 160);
  // The components are model files the other commands read.
  const CliRun m = ckptio_cli("inspect " + (ckpt / "model").string());
  EXPECT_EQ(m.status, 0) << m.out;
  EXPECT_NE(m.out.find("embed.weight"), std::string::npos) << m.out;
  const CliRun d = ckptio_cli("diff " + (ckpt / "model").string() + " " +
                           (exp_ / "epoch3-global_step30" / "model").string());
  EXPECT_EQ(d.status, 1) << d.out;  // different steps, different values
  const CliRun same = ckptio_cli("diff " + ckpt.string() + " " + ckpt.string());
  EXPECT_EQ(same.status, 0) << same.out;
}

}  // namespace
}  // namespace ckptio
