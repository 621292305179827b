// Power cuts during CheckpointIO saves, at every operation boundary, through the power-cut model
// (data not fsynced is lost, directory entries not fsynced through their folder are rolled back).
// The script saves a first step into an experiment folder that does not exist yet (nor does its
// parent), a second step, the same step again (replace) and a third step with keep_n_latest = 2
// (prune). After each cut, what survives must be:
//   - no torn checkpoint: every folder at a final name is committed and holds exactly one of the
//     states that were saved under that name;
//   - never older than reported: "latest" is the last save that returned, or the one in flight;
//   - recoverable: the next save succeeds and leaves no temp debris.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "checkpoint/training_state_fixture.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "ckptio/power_cut_env.h"
#include "support/power_cut_root.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using io::PowerCutEnv;
using io::PowerCutOptions;
using testing::json_of;
using testing::patterned_tensor;
using Names = PowerCutOptions::Names;
using Data = PowerCutOptions::Data;

// Small enough that hundreds of replays take seconds; the model and the EMA still need several
// shards and an index each (max_shard_size below).
TrainingState small_state(int64_t step, int64_t tag) {
  const auto seed = static_cast<uint64_t>(tag) * 16;
  TrainingState s;
  s.model.emplace();
  s.model->emplace("a", patterned_tensor(DType::F32, {8, 8}, seed + 1));
  s.model->emplace("b", patterned_tensor(DType::F32, {16, 8}, seed + 2));
  s.model->emplace("c", patterned_tensor(DType::BF16, {8}, seed + 3));
  s.ema.emplace();
  s.ema->emplace("a", patterned_tensor(DType::F32, {8, 8}, seed + 4));
  s.ema->emplace("b", patterned_tensor(DType::F32, {16, 8}, seed + 5));
  s.optimizer.emplace();
  s.optimizer->tensors["0"]["exp_avg"] = patterned_tensor(DType::F32, {8, 8}, seed + 6);
  s.optimizer->meta = nlohmann::json{{"tag", tag}}.dump();
  s.lr_scheduler = nlohmann::json{{"tag", tag}}.dump();
  s.sampler = nlohmann::json{{"index", tag * 8}}.dump();
  s.running = RunningStates{0, step, step, 1, step};
  s.extra = nlohmann::json{{"tag", tag}}.dump();
  return s;
}

int64_t tag_of(const TrainingState& s) { return json_of(s.extra)["tag"].get<int64_t>(); }

bool same_tensors(const TensorMap& a, const TensorMap& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.dtype() != t.dtype() || it->second.shape() != t.shape() ||
        it->second.nbytes() != t.nbytes()) {
      return false;
    }
    if (t.nbytes() != 0 && std::memcmp(t.bytes().data(), it->second.bytes().data(), t.nbytes()) != 0) {
      return false;
    }
  }
  return true;
}

struct Save {
  TrainingState state;
  bool replace = false;
};

// The saves of the script, in order. Tags are distinct; step 2 is saved twice.
std::vector<Save> script_saves() {
  return {{small_state(1, 1), false},
          {small_state(2, 2), false},
          {small_state(2, 3), true},
          {small_state(3, 4), false}};
}

CheckpointOptions options_for(io::Env* env) {
  CheckpointOptions o;
  o.env = env;
  o.sync = env != nullptr;  // the recovery check runs on the real disk, where fsync only costs time
  o.keep_n_latest = 2;
  o.max_shard_size = 300;  // bytes: two or three shards per tensor set
  o.threads = 1;
  o.warn = [](const std::string&) {};
  return o;
}

// Runs the script until it ends or the power goes out; returns how many saves returned.
size_t run_script(io::Env& env, const fs::path& exp, const std::vector<Save>& saves) {
  size_t returned = 0;
  try {
    CheckpointIO io(exp, options_for(&env));
    for (const Save& s : saves) {
      io.save(s.state, CheckpointSaveOptions{s.replace});
      ++returned;
    }
  } catch (const Error&) {
  }
  return returned;
}

// What loads from `path`, as the tag of the matching save; an explanation in `why` otherwise.
std::optional<int64_t> loaded_tag(const fs::path& path, const std::vector<Save>& saves,
                                  std::string& why) {
  TensorMap model, ema;
  OptimizerState optimizer;
  std::string lr, sampler;
  LoadTargets targets{&model, &ema, &optimizer, &lr, &sampler};
  CheckpointLoadOptions lo;
  lo.verify_checksums = true;
  LoadResult r;
  try {
    r = load_checkpoint_folder(path, targets, lo);
  } catch (const Error& e) {
    why = path.filename().string() + " does not load: " + e.what();
    return std::nullopt;
  }
  for (const Save& s : saves) {
    const TrainingState& x = s.state;
    if (json_of(r.extra) != json_of(x.extra)) continue;
    if (r.running.global_step != x.running.global_step || !same_tensors(model, *x.model) ||
        !same_tensors(ema, *x.ema) ||
        !same_tensors(optimizer.tensors["0"], x.optimizer->tensors.at("0")) ||
        json_of(optimizer.meta) != json_of(x.optimizer->meta) ||
        json_of(lr) != json_of(*x.lr_scheduler) || json_of(sampler) != json_of(*x.sampler)) {
      why = path.filename().string() + " mixes saves (extra " + r.extra + ")";
      return std::nullopt;
    }
    return tag_of(x);
  }
  why = path.filename().string() + " holds no state that was saved (extra " + r.extra + ")";
  return std::nullopt;
}

// Checks what survived a cut after `returned` saves had returned; empty when all is well.
// Without RENAME_EXCHANGE, a replace renames the old folder aside, fsyncs, then renames the new one
// in: a cut between the two leaves no folder at that step and the old one under a temp name
// (documented in docs/checkpoint-io.md). True when that is what `exp` shows.
bool replaced_folder_is_aside(const fs::path& exp, const std::vector<Save>& saves, size_t returned) {
  if (returned == 0 || returned >= saves.size() || !saves[returned].replace) return false;
  const int64_t old_tag = tag_of(saves[returned - 1].state);
  for (const CheckpointEntry& e : list_checkpoints(exp)) {
    if (!e.is_temp || e.global_step != saves[returned].state.running.global_step) continue;
    std::string why;
    if (loaded_tag(e.path, saves, why) == old_tag) return true;
  }
  return false;
}

std::string check_survivors(const fs::path& exp, const std::vector<Save>& saves, size_t returned,
                            bool exchange = true) {
  std::ostringstream problems;
  std::vector<CheckpointEntry> entries;
  try {
    entries = list_checkpoints(exp, {.depth = VerifyDepth::Full});
  } catch (const Error& e) {
    return std::string("list: ") + e.what();
  }
  for (const CheckpointEntry& e : entries) {
    if (e.is_temp) continue;  // debris under a temp name is allowed; the next save removes it
    if (e.state != CheckpointState::Committed) {
      problems << "torn checkpoint visible: " << e.name << " (" << checkpoint_state_name(e.state)
               << ": " << e.problem << "); ";
      continue;
    }
    std::string why;
    const auto tag = loaded_tag(e.path, saves, why);
    if (!tag) {
      problems << why << "; ";
      continue;
    }
    bool named_right = false;
    for (const Save& s : saves) {
      if (tag_of(s.state) == *tag) {
        named_right = checkpoint_folder_name(0, s.state.running.global_step) == e.name;
      }
    }
    if (!named_right) problems << e.name << " holds tag " << *tag << "; ";
  }
  const auto latest = latest_checkpoint(exp, {.depth = VerifyDepth::Full});
  // Acceptable "latest": the last save that returned, or the one that was in flight.
  std::vector<int64_t> allowed;
  if (returned > 0) allowed.push_back(tag_of(saves[returned - 1].state));
  if (returned < saves.size()) allowed.push_back(tag_of(saves[returned].state));
  if (!latest) {
    if (returned > 0) problems << "no checkpoint after " << returned << " saves returned; ";
  } else {
    std::string why;
    const auto tag = loaded_tag(latest->path, saves, why);
    if (!tag) {
      problems << "latest: " << why << "; ";
    } else if (std::find(allowed.begin(), allowed.end(), *tag) == allowed.end() &&
               !(!exchange && replaced_folder_is_aside(exp, saves, returned))) {
      problems << "latest is tag " << *tag << " after " << returned << " saves returned; ";
    }
  }
  return problems.str();
}

// After the cut a new process saves again: it must succeed and leave a clean folder.
std::string check_recovery(const fs::path& exp) {
  try {
    CheckpointIO io(exp, options_for(nullptr));
    io.save(small_state(9, 9));
    for (const auto& e : fs::directory_iterator(exp)) {
      if (io::is_temp_name(e.path().filename().string())) {
        return "debris after recovery save: " + e.path().filename().string();
      }
    }
    const auto latest = io.latest(VerifyDepth::Full);
    if (!latest || latest->global_step != 9) return "recovery save is not latest";
  } catch (const Error& e) {
    return std::string("recovery save failed: ") + e.what();
  }
  return {};
}

// Two folder levels that do not exist yet: the first save must make both durable.
fs::path exp_dir(const testing::PowerCutRoot& root) { return root / "runs" / "exp"; }

void cut_at_every_boundary(const PowerCutOptions& options, bool exchange = true) {
  const std::vector<Save> saves = script_saves();
  uint64_t total = 0;
  {
    testing::PowerCutRoot root;
    PowerCutEnv env(root.path());
    env.set_exchange_supported(exchange);
    ASSERT_EQ(run_script(env, exp_dir(root), saves), saves.size());
    total = env.ops();
    ASSERT_TRUE(check_survivors(exp_dir(root), saves, saves.size()).empty());
  }
  ASSERT_GT(total, 100u);
  ::testing::Test::RecordProperty("boundaries", std::to_string(total + 1));
  size_t failures = 0;
  for (uint64_t n = 0; n <= total; ++n) {
    testing::PowerCutRoot root;
    PowerCutEnv env(root.path());
    env.set_exchange_supported(exchange);
    env.cut_after(n);
    const size_t returned = run_script(env, exp_dir(root), saves);
    env.power_cut(options);
    std::string problems = check_survivors(exp_dir(root), saves, returned, exchange);
    if (problems.empty() && fs::exists(exp_dir(root))) problems = check_recovery(exp_dir(root));
    if (!problems.empty() && ++failures <= 5) {
      ADD_FAILURE() << "power cut after op " << n << " of " << total << " (" << returned
                    << " saves returned): " << problems;
    }
  }
  EXPECT_EQ(failures, 0u) << "of " << total + 1 << " boundaries";
}

TEST(CheckpointPowerCut, EveryBoundaryUnsyncedNamesRolledBack) {
  cut_at_every_boundary({Names::Rollback, Data::Drop});
}

TEST(CheckpointPowerCut, EveryBoundaryNamesKeptDataLost) {
  cut_at_every_boundary({Names::Keep, Data::Drop});
}

TEST(CheckpointPowerCut, EveryBoundaryTornUnsyncedData) {
  cut_at_every_boundary({Names::Rollback, Data::TornPrefix, 11});
}

// Without RENAME_EXCHANGE a replace moves the old folder aside first; in the window between the
// two renames "latest" is the step before, with the replaced folder still on disk under a temp name.
TEST(CheckpointPowerCut, EveryBoundaryWithoutExchange) {
  cut_at_every_boundary({Names::Rollback, Data::Drop}, /*exchange=*/false);
}

}  // namespace
}  // namespace ckptio
