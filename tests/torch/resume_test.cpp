// Bit-exact resume of the training demo (build/bin/train-demo): a run SIGKILLed in the middle of a
// save and resumed with --resume auto ends with the same files as an uninterrupted run: model,
// EMA, optimizer state, LR scheduler and sampler position, byte for byte. Runs for sync saves and
// for async saves in copy and borrow mode.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "support/test_util.h"

namespace {

namespace fs = std::filesystem;
using ckptio::testing::TempDir;

// A tiny model and a short run keep each process to about a second, also under ASan.
const std::string kSmallRun =
    " --steps 12 --ckpt-every 4 --keep 0 --dim 32 --depth 1 --heads 2 --tokens 8"
    " --channels 4 --batch-size 8 --dataset-size 40 --warmup 3 --threads 1 --no-fsync";

struct RunResult {
  bool killed = false;  // ended by SIGKILL
  int exit_code = -1;
};

RunResult run_demo(const fs::path& out, const std::string& args) {
  const std::string seed = args.find("--seed") == std::string::npos ? " --seed 11" : "";
  const std::string cmd = std::string(CKPTIO_BIN_DIR) + "/train-demo --out " + out.string() +
                          kSmallRun + seed + " " + args + " > " + (out.string() + ".log") + " 2>&1";
  const int status = std::system(cmd.c_str());
  RunResult r;
  // system() runs through sh, which reports a child killed by signal N as exit code 128 + N.
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
    r.killed = r.exit_code == 128 + SIGKILL;
  } else if (WIFSIGNALED(status)) {
    r.killed = WTERMSIG(status) == SIGKILL;
  }
  return r;
}

std::string log_of(const fs::path& out) { return ckptio::testing::read_file(out.string() + ".log"); }

// Relative path -> bytes of every file in a checkpoint folder, except the two files that name the
// run rather than its state (the manifest lists checksums of the rest; running_states.json is
// compared by field).
std::map<std::string, std::string> state_files(const fs::path& checkpoint) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(checkpoint)) {
    if (!entry.is_regular_file()) continue;
    const std::string rel = fs::relative(entry.path(), checkpoint).string();
    if (rel == "ckptio.manifest.json" || rel == "running_states.json") continue;
    out[rel] = ckptio::testing::read_file(entry.path());
  }
  return out;
}

nlohmann::json running_states(const fs::path& checkpoint) {
  return nlohmann::json::parse(ckptio::testing::read_file(checkpoint / "running_states.json"));
}

// The committed checkpoint folders (final names) of an experiment.
std::vector<std::string> committed(const fs::path& exp) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(exp)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("epoch", 0) == 0 && fs::exists(entry.path() / "ckptio.manifest.json")) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

fs::path final_checkpoint(const fs::path& exp, int64_t global_step) {
  for (const auto& entry : fs::directory_iterator(exp)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("epoch", 0) == 0 &&
        name.size() > 12 && name.ends_with("-global_step" + std::to_string(global_step))) {
      return entry.path();
    }
  }
  return {};
}

void expect_same_state(const fs::path& a, const fs::path& b) {
  const auto fa = state_files(a);
  const auto fb = state_files(b);
  ASSERT_FALSE(fa.empty());
  std::vector<std::string> names_a, names_b;
  for (const auto& [name, bytes] : fa) names_a.push_back(name);
  for (const auto& [name, bytes] : fb) names_b.push_back(name);
  ASSERT_EQ(names_a, names_b);
  for (const auto& [name, bytes] : fa) EXPECT_TRUE(bytes == fb.at(name)) << name << " differs";
  const auto ra = running_states(a), rb = running_states(b);
  for (const char* key : {"epoch", "step", "global_step", "actual_update_step"}) {
    EXPECT_EQ(ra.at(key), rb.at(key)) << key;
  }
}

void resume_is_bit_exact(const std::string& mode_flags) {
  TempDir dir;
  const fs::path reference = dir / "reference";
  const fs::path crashed = dir / "crashed";
  ASSERT_EQ(run_demo(reference, mode_flags).exit_code, 0) << log_of(reference);

  const RunResult killed = run_demo(crashed, mode_flags + " --kill-at-step 8");
  ASSERT_TRUE(killed.killed) << "exit " << killed.exit_code << "\n" << log_of(crashed);
  // Only the step-4 checkpoint was committed; the step-8 save was torn.
  EXPECT_EQ(committed(crashed), std::vector<std::string>{"epoch0-global_step4"});

  const RunResult resumed = run_demo(crashed, mode_flags + " --resume auto");
  ASSERT_EQ(resumed.exit_code, 0) << log_of(crashed);
  EXPECT_NE(log_of(crashed).find("resumed from"), std::string::npos) << log_of(crashed);
  EXPECT_NE(log_of(crashed).find("global_step 4)"), std::string::npos) << log_of(crashed);

  const fs::path a = final_checkpoint(reference, 12);
  const fs::path b = final_checkpoint(crashed, 12);
  ASSERT_FALSE(a.empty()) << log_of(reference);
  ASSERT_FALSE(b.empty()) << log_of(crashed);
  expect_same_state(a, b);
  // The intermediate checkpoints written after the resume match too.
  expect_same_state(final_checkpoint(reference, 8), final_checkpoint(crashed, 8));
}

TEST(TorchResume, SyncSavesResumeBitExactly) { resume_is_bit_exact(""); }

TEST(TorchResume, AsyncCopySavesResumeBitExactly) { resume_is_bit_exact("--async --snapshot copy"); }

TEST(TorchResume, AsyncBorrowSavesResumeBitExactly) {
  resume_is_bit_exact("--async --snapshot borrow");
}

// A damaged newest checkpoint (a truncated file, or a flipped bit that only checksums see) does not
// block the run: --resume auto falls back to the one before, and saving the damaged step again moves
// the damaged folder aside as epoch{E}-global_step12.damaged-1.
TEST(TorchResume, DamagedNewestCheckpointIsSkippedAndSupersededOnResume) {
  for (const bool flip : {false, true}) {
    SCOPED_TRACE(flip ? "flipped bit" : "truncated file");
    TempDir dir;
    const fs::path exp = dir / "exp";
    ASSERT_EQ(run_demo(exp, "").exit_code, 0) << log_of(exp);
    const fs::path newest = final_checkpoint(exp, 12);
    ASSERT_FALSE(newest.empty());
    if (flip) {
      const fs::path victim = newest / "model" / "model.safetensors";
      std::string bytes = ckptio::testing::read_file(victim);
      bytes[bytes.size() - 5] = static_cast<char>(bytes[bytes.size() - 5] ^ 0x01);
      ckptio::testing::write_file(victim, bytes);
    } else {
      fs::resize_file(newest / "optimizer" / "optimizer.json", 10);
    }
    const RunResult resumed = run_demo(exp, "--resume auto");
    ASSERT_EQ(resumed.exit_code, 0) << log_of(exp);
    const std::string log = log_of(exp);
    EXPECT_NE(log.find("global_step 8)"), std::string::npos) << log;
    EXPECT_NE(log.find(flip ? "model/model.safetensors: checksum mismatch"
                            : "optimizer/optimizer.json: size 10 bytes"),
              std::string::npos)
        << log;
    EXPECT_TRUE(fs::is_directory(exp / (newest.filename().string() + ".damaged-1"))) << log;
    EXPECT_TRUE(fs::exists(final_checkpoint(exp, 12) / "ckptio.manifest.json"));
  }
}

// Negative or zero counts are usage errors: exit 2 and a short message naming the flag (not a
// wrapped 2^64-1 for --keep, not CLI11's exit codes 105/109, not DBL_MAX printed in full).
TEST(TorchDemo, BadCountsAreUsageErrors) {
  TempDir dir;
  for (const std::string flags : {"--keep -1", "--steps 0", "--ckpt-every -3", "--steps -5",
                                  "--seed -1", "--keep x"}) {
    SCOPED_TRACE(flags);
    const fs::path log = dir / "usage.log";
    const std::string cmd = std::string(CKPTIO_BIN_DIR) + "/train-demo --out " +
                            (dir / "exp").string() + " " + flags + " > " + log.string() + " 2>&1";
    const int status = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 2);
    const std::string text = ckptio::testing::read_file(log);
    EXPECT_NE(text.find(flags.substr(0, flags.find(' '))), std::string::npos) << text;
    EXPECT_NE(text.find("whole number"), std::string::npos) << text;
    EXPECT_EQ(text.find("179769"), std::string::npos) << text;
    EXPECT_LT(text.size(), 400u) << text;
    EXPECT_FALSE(fs::exists(dir / "exp"));
  }
}

// The comparison above can fail: a run with another seed differs in every state file, and the
// demo's own --compare says so.
TEST(TorchResume, DifferentRunsAreDetected) {
  TempDir dir;
  ASSERT_EQ(run_demo(dir / "a", "").exit_code, 0) << log_of(dir / "a");
  ASSERT_EQ(run_demo(dir / "b", "--seed 12").exit_code, 0) << log_of(dir / "b");
  const auto fa = state_files(final_checkpoint(dir / "a", 12));
  const auto fb = state_files(final_checkpoint(dir / "b", 12));
  ASSERT_EQ(fa.size(), fb.size());
  for (const auto& [name, bytes] : fa) {
    // The LR schedule and the optimizer's hyperparameters and step counts do not depend on the
    // seed; every tensor file and the sampler state do.
    if (name != "lr_scheduler.json" && name != "optimizer/optimizer.json") {
      EXPECT_FALSE(bytes == fb.at(name)) << name;
    }
  }
  const std::string cmd = std::string(CKPTIO_BIN_DIR) + "/train-demo --compare " +
                          final_checkpoint(dir / "a", 12).string() + " " +
                          final_checkpoint(dir / "b", 12).string() + " > /dev/null";
  const int status = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string same = std::string(CKPTIO_BIN_DIR) + "/train-demo --compare " +
                           final_checkpoint(dir / "a", 12).string() + " " +
                           final_checkpoint(dir / "a", 12).string() + " > /dev/null";
  EXPECT_EQ(WEXITSTATUS(std::system(same.c_str())), 0);
}

}  // namespace
