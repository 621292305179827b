// Power cuts during save_sharded, at every operation boundary, through the power-cut model (data
// not fsynced is lost, directory entries not fsynced through their folder are rolled back). The
// script saves into a folder that does not exist yet, then over it: a sharded save whose shard
// names collide with the first (the old index is retired first), a single file (the index and
// shards become stale), and a sharded save again. After each cut the folder must load as one of
// the saved states (or, only while a colliding save is in flight, fail to load: the documented
// "no index" window), and as the last save that returned, or the one in flight, never older.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "ckptio/error.h"
#include "ckptio/load.h"
#include "ckptio/power_cut_env.h"
#include "ckptio/sharded.h"
#include "format/sharded/seeded_tensors.h"
#include "support/power_cut_root.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using io::PowerCutEnv;
using io::PowerCutOptions;
using Names = PowerCutOptions::Names;
using Data = PowerCutOptions::Data;

struct Version : testing::SeededTensors {
  uint64_t max_shard_size = 300;
  bool collides = false;  // its shard names are those of the save before it
};

std::vector<Version> script_versions() {
  std::vector<Version> v(4);
  for (unsigned k = 0; k < 4; ++k) {
    v[k].add("a", DType::F32, {8, 8}, 10 * k + 1);  // 256 bytes: one shard each at 300
    v[k].add("b", DType::F32, {16, 8}, 10 * k + 2);
    v[k].add("c", DType::BF16, {8}, 10 * k + 3);
  }
  v[1].collides = true;                 // same three shard names as v[0]
  v[2].max_shard_size = uint64_t{1} << 30;  // one file: the index and shards go stale
  v[3].add("d", DType::F16, {4}, 99);   // four shards
  return v;
}

size_t run_script(io::Env& env, const fs::path& dir, const std::vector<Version>& versions) {
  size_t returned = 0;
  try {
    for (const Version& v : versions) {
      ShardedWriteOptions o;
      o.max_shard_size = v.max_shard_size;
      o.threads = 1;  // one op order from run to run
      o.env = &env;
      save_sharded(dir, v.views(), o);
      ++returned;
    }
  } catch (const Error&) {
  }
  return returned;
}

bool holds(const std::map<std::string, Tensor>& got, const Version& v) {
  if (got.size() != v.names.size()) return false;
  for (size_t i = 0; i < v.names.size(); ++i) {
    auto it = got.find(v.names[i]);
    if (it == got.end()) return false;
    const Tensor& t = v.tensors[i];
    if (it->second.dtype() != t.dtype() || it->second.shape() != t.shape() ||
        it->second.nbytes() != t.nbytes() ||
        std::memcmp(it->second.bytes().data(), t.bytes().data(), t.nbytes()) != 0) {
      return false;
    }
  }
  return true;
}

std::string check_survivors(const fs::path& dir, const std::vector<Version>& versions,
                            size_t returned) {
  std::vector<size_t> allowed;
  if (returned > 0) allowed.push_back(returned - 1);
  if (returned < versions.size()) allowed.push_back(returned);
  const bool may_fail = returned == 0 || (returned < versions.size() && versions[returned].collides);
  std::ostringstream problems;
  if (!fs::exists(dir)) {
    if (returned > 0) problems << "folder gone after " << returned << " saves returned";
    return problems.str();
  }
  try {
    const LoadedCheckpoint loaded = load_checkpoint(dir);
    size_t which = versions.size();
    for (size_t k = 0; k < versions.size(); ++k) {
      if (holds(loaded.tensors, versions[k])) which = k;
    }
    if (which == versions.size()) {
      problems << "loads a state that was never saved (torn)";
    } else if (std::find(allowed.begin(), allowed.end(), which) == allowed.end()) {
      problems << "loads save " << which + 1 << " after " << returned << " saves returned";
    }
  } catch (const Error& e) {
    if (!may_fail) problems << "does not load after " << returned << " saves returned: " << e.what();
  }
  return problems.str();
}

void cut_at_every_boundary(const PowerCutOptions& options) {
  const std::vector<Version> versions = script_versions();
  uint64_t total = 0;
  {
    testing::PowerCutRoot root;
    PowerCutEnv env(root.path());
    ASSERT_EQ(run_script(env, root / "model", versions), versions.size());
    total = env.ops();
    ASSERT_EQ(check_survivors(root / "model", versions, versions.size()), "");
  }
  ASSERT_GT(total, 40u);
  ::testing::Test::RecordProperty("boundaries", std::to_string(total + 1));
  size_t failures = 0;
  for (uint64_t n = 0; n <= total; ++n) {
    testing::PowerCutRoot root;
    PowerCutEnv env(root.path());
    env.cut_after(n);
    const size_t returned = run_script(env, root / "model", versions);
    env.power_cut(options);
    const std::string problems = check_survivors(root / "model", versions, returned);
    if (!problems.empty() && ++failures <= 5) {
      ADD_FAILURE() << "power cut after op " << n << " of " << total << ": " << problems;
    }
  }
  EXPECT_EQ(failures, 0u) << "of " << total + 1 << " boundaries";
}

TEST(ShardedPowerCut, EveryBoundaryUnsyncedNamesRolledBack) {
  cut_at_every_boundary({Names::Rollback, Data::Drop});
}

TEST(ShardedPowerCut, EveryBoundaryNamesKeptDataLost) {
  cut_at_every_boundary({Names::Keep, Data::Drop});
}

TEST(ShardedPowerCut, EveryBoundaryTornUnsyncedData) {
  cut_at_every_boundary({Names::Rollback, Data::TornPrefix, 5});
}

// What a cut (or SIGKILL) between the first shard's rename and the index leaves in a new folder:
// one shard alone. It names itself part of a set, so it must not load as the whole model.
TEST(ShardedPowerCut, LoneShardWithoutIndexDoesNotLoad) {
  testing::PowerCutRoot root;
  const Version v = script_versions()[0];
  ShardedWriteOptions o;
  o.max_shard_size = v.max_shard_size;
  save_sharded(root / "m", v.views(), o);
  fs::remove(root / "m" / "model.safetensors.index.json");
  fs::remove(root / "m" / "model-00002-of-00003.safetensors");
  fs::remove(root / "m" / "model-00003-of-00003.safetensors");
  try {
    (void)load_checkpoint(root / "m");
    ADD_FAILURE() << "one shard of three loaded as a model";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_NE(std::string(e.what()).find("one shard of 3"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ckptio
