// Faults through the fault-injecting Env: every failing write, fsync, open, close, rename, folder
// fsync and mkdir of a save makes it fail with a typed error (or, after the commit, only warn),
// earlier checkpoints stay intact, and the next successful save leaves no temp debris. A simulated
// power cut after any number of operations leaves the old or the new checkpoint. (Where a save
// makes many calls of one kind, an even spread of them is failed, always the first and the last.)
#include <gtest/gtest.h>

#include "checkpoint/training_state_fixture.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/sharded.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using io::Fault;
using io::FaultInjectingEnv;
using io::FaultOp;

CheckpointOptions options_with(io::Env* env, bool async) {
  CheckpointOptions o;
  o.env = env;
  o.sync = env != nullptr;  // the saves under test fsync; set-up and checks need not
  o.async = async;
  o.max_shard_size = parse_size("60KB");  // several shards and an index per component
  o.warn = [](const std::string&) {};
  return o;
}

// Saves step 1 with the real Env: the checkpoint every fault must leave intact.
void save_baseline(const fs::path& exp) {
  CheckpointIO io(exp, options_with(nullptr, false));
  io.save(testing::make_training_state(1));
}

void expect_only_committed_folders(const fs::path& exp) {
  for (const auto& e : fs::directory_iterator(exp)) {
    const std::string name = e.path().filename().string();
    EXPECT_FALSE(io::is_temp_name(name)) << "debris: " << name;
  }
  for (const CheckpointEntry& e : list_checkpoints(exp, {.depth = VerifyDepth::Full})) {
    EXPECT_EQ(e.state, CheckpointState::Committed) << e.name << ": " << e.problem;
  }
}

// Which of the `n` calls to fail: all of them when few, else an even spread that always includes
// the first and the last (keeps each test to seconds on a busy 2-core machine).
std::vector<uint64_t> sample_calls(uint64_t n, uint64_t max_samples = 10) {
  std::vector<uint64_t> out;
  if (n <= max_samples) {
    for (uint64_t i = 1; i <= n; ++i) out.push_back(i);
    return out;
  }
  for (uint64_t k = 0; k < max_samples; ++k) {
    const uint64_t v = 1 + k * (n - 1) / (max_samples - 1);
    if (out.empty() || out.back() != v) out.push_back(v);
  }
  return out;
}

// How many calls of `op` one save makes.
uint64_t calls_per_save(FaultOp op) {
  testing::TempDir dir;
  save_baseline(dir / "exp");
  FaultInjectingEnv env;
  CheckpointIO io(dir / "exp", options_with(&env, false));
  const uint64_t before = env.count(op);
  io.save(testing::make_training_state(2));
  return env.count(op) - before;
}

struct FaultCase {
  FaultOp op;
  int error;
  const char* name;
};

class CheckpointFault : public ::testing::TestWithParam<std::tuple<FaultCase, bool>> {};

TEST_P(CheckpointFault, EveryFailingCallFailsTheSaveCleanly) {
  const auto [fc, async] = GetParam();
  const uint64_t n_calls = calls_per_save(fc.op);
  ASSERT_GT(n_calls, 0u);
  const ErrorCode expected = fc.error == ENOSPC ? ErrorCode::NoSpace : ErrorCode::IoError;
  int failed = 0;
  for (uint64_t nth : sample_calls(n_calls)) {
    SCOPED_TRACE(std::string(fc.name) + " call " + std::to_string(nth) + " of " +
                 std::to_string(n_calls));
    testing::TempDir dir;
    const fs::path exp = dir / "exp";
    save_baseline(exp);
    FaultInjectingEnv env;
    env.inject(Fault{fc.op, nth, fc.error, "", false});
    CheckpointIO io(exp, options_with(&env, async));
    const TrainingState s2 = testing::make_training_state(2);
    bool threw = false;
    try {
      io.save(s2);
      io.wait();
    } catch (const Error& e) {
      threw = true;
      ++failed;
      EXPECT_EQ(e.code(), expected) << e.what();
      EXPECT_NE(std::string(e.what()).find("epoch0-global_step2"), std::string::npos) << e.what();
    }
    // The earlier checkpoint is intact; step 2 is either absent or complete.
    CheckpointIO check(exp, options_with(nullptr, false));
    const auto latest = check.latest(VerifyDepth::Full);
    ASSERT_TRUE(latest.has_value());
    if (threw) {
      EXPECT_EQ(latest->global_step, 1);
      EXPECT_FALSE(fs::exists(exp / "epoch0-global_step2"));
    }
    testing::expect_checkpoint_equals(check, "epoch0-global_step1",
                                      testing::make_training_state(1));
    // The next successful save leaves no debris.
    CheckpointIO again(exp, options_with(nullptr, async));
    again.save(testing::make_training_state(3));
    again.wait();
    expect_only_committed_folders(exp);
    if (!threw) testing::expect_checkpoint_equals(check, "epoch0-global_step2", s2);
  }
  // Faults before the commit must fail the save; only clean-up after it may be forgiven.
  EXPECT_GT(failed, 0);
}

INSTANTIATE_TEST_SUITE_P(
    AllOps, CheckpointFault,
    ::testing::Combine(::testing::Values(FaultCase{FaultOp::Write, EIO, "write EIO"},
                                         FaultCase{FaultOp::Write, ENOSPC, "write ENOSPC"},
                                         FaultCase{FaultOp::Sync, EIO, "fsync EIO"},
                                         FaultCase{FaultOp::Open, ENOSPC, "open ENOSPC"},
                                         FaultCase{FaultOp::Close, EIO, "close EIO"},
                                         FaultCase{FaultOp::Rename, EIO, "rename EIO"},
                                         FaultCase{FaultOp::SyncDir, EIO, "fsync dir EIO"},
                                         FaultCase{FaultOp::Mkdir, ENOSPC, "mkdir ENOSPC"}),
                       ::testing::Bool()),
    [](const auto& info) {
      std::string name = std::get<0>(info.param).name;
      for (char& c : name) {
        if (c == ' ') c = '_';
      }
      return name + (std::get<1>(info.param) ? "_async" : "_sync");
    });

TEST(CheckpointFaults, ShortWritesAndEintrStillSaveEveryByte) {
  testing::TempDir dir;
  FaultInjectingEnv env;
  env.set_short_writes(777);
  env.set_eintr_every(5);
  CheckpointIO io(dir / "exp", options_with(&env, true));
  const TrainingState s = testing::make_training_state(4, 2);
  io.save(s);
  io.wait();
  EXPECT_GT(env.faults_fired(), 100u);
  CheckpointIO check(dir / "exp", options_with(nullptr, false));
  EXPECT_TRUE(check.verify(dir / "exp" / "epoch0-global_step4", VerifyDepth::Full).ok);
  testing::expect_checkpoint_equals(check, "latest", s);
}

TEST(CheckpointFaults, DiskThatStaysFullFailsWithNoSpaceAndKeepsOldCheckpoints) {
  testing::TempDir dir;
  save_baseline(dir / "exp");
  FaultInjectingEnv env;
  env.inject(Fault{FaultOp::Write, 3, ENOSPC, "", true});
  CheckpointIO io(dir / "exp", options_with(&env, false));
  try {
    io.save(testing::make_training_state(2));
    FAIL() << "save succeeded on a full disk";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NoSpace);
  }
  // The process can continue: the same step saves once space is back.
  env.clear();
  io.save(testing::make_training_state(2));
  expect_only_committed_folders(dir / "exp");
  EXPECT_EQ(io.latest(VerifyDepth::Full)->global_step, 2);
}

TEST(CheckpointFaults, PowerCutAfterAnyNumberOfOperationsLeavesOldOrNew) {
  // Count the mutating operations of one save.
  uint64_t total = 0;
  for (FaultOp op : {FaultOp::Write, FaultOp::Truncate, FaultOp::Sync, FaultOp::Close,
                     FaultOp::Rename, FaultOp::SyncDir, FaultOp::Remove, FaultOp::Mkdir}) {
    total += calls_per_save(op);
  }
  ASSERT_GT(total, 10u);
  for (uint64_t cut : sample_calls(total + 1, 24)) {
    const uint64_t ops = cut - 1;
    SCOPED_TRACE("power cut after " + std::to_string(ops) + " of " + std::to_string(total));
    testing::TempDir dir;
    const fs::path exp = dir / "exp";
    save_baseline(exp);
    FaultInjectingEnv env;
    env.crash_after(ops);
    const TrainingState s2 = testing::make_training_state(2);
    {
      CheckpointIO io(exp, options_with(&env, false));
      try {
        io.save(s2);
      } catch (const Error&) {
      }
    }
    // "Reboot": look with the real Env.
    for (const CheckpointEntry& e : list_checkpoints(exp, {.depth = VerifyDepth::Full})) {
      if (!e.is_temp) {
        EXPECT_EQ(e.state, CheckpointState::Committed) << e.name << ": " << e.problem;
      }
    }
    CheckpointIO check(exp, options_with(nullptr, false));
    const auto latest = check.latest(VerifyDepth::Full);
    ASSERT_TRUE(latest.has_value());
    testing::expect_checkpoint_equals(
        check, "latest", latest->global_step == 2 ? s2 : testing::make_training_state(1));
  }
}


// A file system without RENAME_EXCHANGE: replacing a checkpoint renames the old one aside, the new
// one in, fsyncs the folder and only then deletes the old one. Every failing rename or folder fsync
// leaves the old checkpoint (or, once the new one is durable, the new one) at the final name.
TEST(CheckpointFaults, ReplaceWithoutExchangeNeverLosesBothVersions) {
  const TrainingState replacement = testing::make_training_state(11);
  TrainingState s1b = replacement;
  s1b.running = testing::make_training_state(1).running;
  // How many renames and folder fsyncs such a replace makes.
  auto calls_per_replace = [&](FaultOp op) {
    testing::TempDir dir;
    save_baseline(dir / "exp");
    FaultInjectingEnv env;
    env.refuse_exchange(EINVAL);
    CheckpointIO io(dir / "exp", options_with(&env, false));
    const uint64_t before = env.count(op);
    io.save(s1b, CheckpointSaveOptions{.replace = true});
    return env.count(op) - before;
  };
  for (FaultOp op : {FaultOp::Rename, FaultOp::SyncDir}) {
    const uint64_t n = calls_per_replace(op);
    ASSERT_GE(n, 2u);
    for (uint64_t nth = 1; nth <= n; ++nth) {
      SCOPED_TRACE(std::string(op == FaultOp::Rename ? "rename" : "fsync dir") + " call " +
                   std::to_string(nth));
      testing::TempDir dir;
      const fs::path exp = dir / "exp";
      save_baseline(exp);
      FaultInjectingEnv env;
      env.refuse_exchange(EINVAL);
      env.inject(Fault{op, nth, EIO, "", false});
      CheckpointIO io(exp, options_with(&env, false));
      bool threw = false;
      try {
        io.save(s1b, CheckpointSaveOptions{.replace = true});
      } catch (const Error& e) {
        threw = true;
        EXPECT_EQ(e.code(), ErrorCode::IoError) << e.what();
      }
      CheckpointIO check(exp, options_with(nullptr, false));
      ASSERT_TRUE(fs::exists(exp / "epoch0-global_step1")) << "both versions lost";
      EXPECT_TRUE(check.verify("epoch0-global_step1", VerifyDepth::Full).ok);
      testing::expect_checkpoint_equals(check, "epoch0-global_step1",
                                        threw ? testing::make_training_state(1) : s1b);
      CheckpointIO again(exp, options_with(nullptr, false));
      again.save(testing::make_training_state(3));
      expect_only_committed_folders(exp);
    }
  }
}

TEST(CheckpointFaults, ReplaceWithoutExchangeWarnsWhenTheOldVersionCannotBeDeleted) {
  testing::TempDir dir;
  const fs::path exp = dir / "exp";
  save_baseline(exp);
  FaultInjectingEnv env;
  env.refuse_exchange(ENOSYS);
  env.inject(Fault{FaultOp::Remove, 1, EIO, ".replaced-", false});
  std::vector<std::string> warnings;
  CheckpointOptions o = options_with(&env, false);
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  CheckpointIO io(exp, o);
  TrainingState s1b = testing::make_training_state(11);
  s1b.running = testing::make_training_state(1).running;
  ASSERT_NO_THROW(io.save(s1b, CheckpointSaveOptions{.replace = true}));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("replaced"), std::string::npos) << warnings[0];
  testing::expect_checkpoint_equals(io, "latest", s1b);
  // The leftover goes with the next save.
  io.save(testing::make_training_state(2));
  expect_only_committed_folders(exp);
  for (const auto& e : fs::directory_iterator(exp)) {
    EXPECT_EQ(e.path().filename().string().find(".replaced-"), std::string::npos);
  }
}

// A power cut at any point of such a replace: after the reboot, the next CheckpointIO finds the old
// or the new checkpoint at the step.
TEST(CheckpointFaults, PowerCutDuringAReplaceWithoutExchangeLeavesOldOrNew) {
  TrainingState s1b = testing::make_training_state(11);
  s1b.running = testing::make_training_state(1).running;
  // The mutating operations of one such replace: an even spread of cut points over the writing,
  // and every one of the last ones (the commit and the clean-up).
  uint64_t total = 0;
  {
    testing::TempDir dir;
    save_baseline(dir / "exp");
    FaultInjectingEnv env;
    env.refuse_exchange(EINVAL);
    CheckpointIO io(dir / "exp", options_with(&env, false));
    io.save(s1b, CheckpointSaveOptions{.replace = true});
    for (FaultOp op : {FaultOp::Write, FaultOp::Truncate, FaultOp::Sync, FaultOp::Close,
                       FaultOp::Rename, FaultOp::SyncDir, FaultOp::Remove, FaultOp::Mkdir}) {
      total += env.count(op);
    }
  }
  ASSERT_GT(total, 12u);
  std::vector<uint64_t> cuts = sample_calls(total - 10, 12);
  for (uint64_t k = total - 10; k <= total + 1; ++k) cuts.push_back(k);
  for (uint64_t cut : cuts) {
    const uint64_t ops = cut - 1;
    SCOPED_TRACE("power cut after " + std::to_string(ops) + " of " + std::to_string(total));
    testing::TempDir dir;
    const fs::path exp = dir / "exp";
    save_baseline(exp);
    FaultInjectingEnv env;
    env.refuse_exchange(EINVAL);
    env.crash_after(ops);
    bool saved = false;
    {
      CheckpointIO io(exp, options_with(&env, false));
      try {
        io.save(s1b, CheckpointSaveOptions{.replace = true});
        saved = !env.crashed();
      } catch (const Error&) {
      }
    }
    // "Reboot": the next CheckpointIO (its load) puts back a folder moved aside.
    CheckpointIO check(exp, options_with(nullptr, false));
    TensorMap model;
    const LoadResult r = check.load("latest", LoadTargets{.model = &model});
    EXPECT_EQ(r.path.filename(), "epoch0-global_step1");
    EXPECT_TRUE(check.verify("epoch0-global_step1", VerifyDepth::Full).ok);
    const bool is_new =
        nlohmann::json::parse(testing::read_file(exp / "epoch0-global_step1/sampler.json")) ==
        testing::json_of(*s1b.sampler);
    if (saved) {
      EXPECT_TRUE(is_new);
    }
    testing::expect_checkpoint_equals(check, "epoch0-global_step1",
                                      is_new ? s1b : testing::make_training_state(1));
    if (ops == total) {
      EXPECT_TRUE(saved);
    }
  }
}

}  // namespace
}  // namespace ckptio
