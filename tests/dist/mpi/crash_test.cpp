// Kills one rank of a distributed save with SIGKILL, at many moments chosen by number, and checks
// what a crash leaves on disk.
//
//   dist_mpi_crash_test --np N --rounds R [--seed S] [--work DIR]
//
// Each round is one `mpirun -np N dist_mpi_crash_worker save ...` job (crash_worker.cpp) in which
// one rank kills itself at its k-th Env call (tests/dist/kill_env.h); mpirun then ends the job. The
// moments come from a dry run that logs every call of every rank, sorted into the phases of a save
// (PhaseTracker): one moment of every phase, then more up to R, drawn with a fixed seed. Nothing
// depends on timing: the same (rank, call) pairs die in every run. Rounds work like a restarted
// job: a round saves the step after the newest committed one, so a save killed before its commit
// is retried by the next round over its leftovers.
//
// After every round, on disk:
//   - every folder under a checkpoint name is committed and verifies (manifest sizes and xxh3);
//   - a rank that saw its save return means that checkpoint is committed and verifies;
//   - the newest committed checkpoint is the one latest_checkpoint picks, and the dist reader
//     reads back every tensor bit for bit;
//   - temp folders left by a kill belong only to the step being retried, or to a step whose
//     coordinator died between its commit and the removal of that step's leftovers: a committed
//     save that any rank saw return has removed the leftovers of its name.
// A job that does not end within its time limit fails the test (a hang).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "ckptio/checkpoint_io.h"
#include "ckptio/dist.h"
#include "dist_helpers.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
namespace dist = ckptio::dist;

struct Args {
  int np = 2;
  size_t rounds = 30;
  uint64_t seed = 1;
  fs::path work;
};
Args g_args;

// A job that runs longer than this has hung (a normal round takes a second or two).
constexpr auto kJobLimit = std::chrono::seconds(120);
constexpr int kHung = -2;

// Runs `mpirun -np N worker args...` in its own process group with stdout and stderr into `out`;
// returns its exit status, 128+signal when it died of a signal, or kHung when it ran past
// kJobLimit (then the whole group is killed).
int run_job(const std::vector<std::string>& args, const fs::path& out) {
  std::vector<std::string> cmd{CKPTIO_MPIEXEC, CKPTIO_MPIEXEC_NUMPROC_FLAG, std::to_string(g_args.np),
                               "--oversubscribe", CKPTIO_CRASH_WORKER};
  cmd.insert(cmd.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : cmd) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return -1;
  // Polled, not slept on: the limit only catches a hang, it never decides an outcome.
  // A hung mpirun gets SIGTERM (it then ends its ranks), and SIGKILL 10 s later.
  auto deadline = std::chrono::steady_clock::now() + kJobLimit;
  bool hung = false;
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(-pid, hung ? SIGKILL : SIGTERM);
      hung = true;
      deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (hung) return kHung;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One logged call of a rank: its number and "call file".
struct Call {
  uint64_t number = 0;
  std::string what;
};

std::vector<Call> read_calls(const fs::path& log) {
  std::vector<Call> calls;
  std::ifstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line == "KILL") continue;
    const size_t sp = line.find(' ');
    calls.push_back({std::stoull(line.substr(0, sp)), line.substr(sp + 1)});
  }
  return calls;
}

// Which part of the save a call belongs to, from the calls before it in the rank's log: the item
// being written (a shard, the index, the manifest, the folder's commit) and whether the call
// writes or makes durable. The kills cover every part that occurs.
class PhaseTracker {
 public:
  PhaseTracker(int rank, std::string final_name) : coordinator_(rank == 0), final_(std::move(final_name)) {}

  std::string phase_of(const std::string& what) {
    const std::string who = coordinator_ ? "coordinator: " : "other rank: ";
    const std::string call = what.substr(0, what.find(' '));
    const bool durable = call == "sync" || call == "sync_dir";
    if (call == "returned") return who + "after the save returned";
    if (what == "rename " + final_) {
      committed_ = true;
      return who + "commit rename";
    }
    if (committed_) {
      if (!swept_ && durable) return who + "fsync of the parent after the commit";
      swept_ = true;  // anything after that parent fsync removes leftovers
      return who + "removing leftovers of earlier saves";
    }
    if (what.find("shard-") != std::string::npos) item_ = "shard";
    if (what.find(dist::kIndexName) != std::string::npos) item_ = "index";
    if (what.find("ckptio.manifest.json") != std::string::npos) item_ = "manifest";
    if (item_ == "manifest" && (call == "list_dir" || call == "stat")) item_ = "commit";
    if (item_.empty()) return who + "creating the temp folder";
    if (item_ == "commit") return who + "commit: fsync of the folder tree";
    return who + item_ + (durable ? " fsync" : " write");
  }

 private:
  bool coordinator_;
  std::string final_;
  std::string item_;
  bool committed_ = false;
  bool swept_ = false;
};

struct Moment {
  int rank = 0;
  uint64_t call = 0;
  std::string what;
  std::string phase;
};

fs::path ckpt_dir(const fs::path& root, int64_t step) {
  return root / ckptio::checkpoint_folder_name(0, step);
}

// The steps of temp folders in `root` (".epoch0-global_step<S>.tmp-<random>").
std::multiset<int64_t> leftover_steps(const fs::path& root) {
  std::multiset<int64_t> steps;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    const size_t tmp = name.find(".tmp-");
    if (name.empty() || name[0] != '.' || tmp == std::string::npos) {
      continue;
    }
    const auto parsed = ckptio::parse_checkpoint_folder_name(name.substr(1, tmp - 1));
    if (parsed) {
      steps.insert(parsed->second);
    } else {
      ADD_FAILURE() << "unexpected temp entry " << name;
    }
  }
  return steps;
}

// Every tensor of the checkpoint read back through the dist reader equals the full tensor.
void expect_reads_back(const fs::path& dir) {
  const dist::Reader reader = dist::Reader::open(dir);
  reader.check_files();
  for (const dist::testing::Spec& s : dist::testing::specs()) {
    const auto want = dist::testing::global_bytes(s.name, s.dtype, s.shape);
    std::vector<std::byte> got(want.size(), std::byte{0x5a});
    (void)reader.read_tensor(s.name, got);
    EXPECT_TRUE(got == want) << dir << ": tensor " << s.name;
  }
}

std::set<int> ranks_that_returned(const fs::path& side) {
  std::set<int> ranks;
  for (int r = 0; r < g_args.np; ++r) {
    if (fs::exists(side / ("saved-rank-" + std::to_string(r)))) ranks.insert(r);
  }
  return ranks;
}

void clear_markers(const fs::path& side) {
  for (int r = 0; r < g_args.np; ++r) fs::remove(side / ("saved-rank-" + std::to_string(r)));
}

TEST(DistMpiCrash, ARankKilledAtAnyMomentLeavesOnlyCommittedCheckpointsThatVerify) {
  const fs::path work = g_args.work.empty()
                            ? fs::temp_directory_path() / ("ckptio-dist-crash-np" + std::to_string(g_args.np))
                            : g_args.work;
  const fs::path root = work / "run";
  const fs::path side = work / "side";
  fs::remove_all(work);
  fs::create_directories(root);
  fs::create_directories(side);
  const ckptio::CheckpointFolderOptions full{.depth = ckptio::VerifyDepth::Full};

  // Dry run: step 0 saved by every rank with nobody killed; the logs list every moment.
  const std::string final0 = ckptio::checkpoint_folder_name(0, 0);
  int rc = run_job({"save", ckpt_dir(root, 0).string(), "0", side.string(), "-1", "0"}, side / "dry-run.out");
  ASSERT_EQ(rc, 0) << slurp(side / "dry-run.out");
  ASSERT_EQ(ranks_that_returned(side).size(), size_t(g_args.np));
  std::vector<Moment> moments;
  for (int r = 0; r < g_args.np; ++r) {
    PhaseTracker phases(r, final0);
    for (const Call& c : read_calls(side / ("calls-rank-" + std::to_string(r) + ".log"))) {
      moments.push_back({r, c.number, c.what, phases.phase_of(c.what)});
    }
  }
  ASSERT_FALSE(moments.empty());
  ASSERT_EQ(moments.back().what, "returned");

  // One moment of every phase (on a rank of its kind), then others up to `rounds`, all drawn from
  // the seed with the generator's own outputs (the same draw with every standard library).
  std::mt19937_64 gen(g_args.seed);
  std::vector<std::string> phase_order;
  std::map<std::string, std::vector<size_t>> by_phase;
  for (size_t i = 0; i < moments.size(); ++i) {
    auto& group = by_phase[moments[i].phase];
    if (group.empty()) phase_order.push_back(moments[i].phase);
    group.push_back(i);
  }
  std::vector<size_t> picked;
  for (const std::string& phase : phase_order) {
    const auto& group = by_phase[phase];
    picked.push_back(group[gen() % group.size()]);
  }
  std::vector<size_t> rest;
  for (size_t i = 0; i < moments.size(); ++i) {
    if (std::find(picked.begin(), picked.end(), i) == picked.end()) rest.push_back(i);
  }
  for (size_t i = 0; picked.size() < g_args.rounds && i < rest.size(); ++i) {
    std::swap(rest[i], rest[i + gen() % (rest.size() - i)]);
    picked.push_back(rest[i]);
  }
  // By rank, then call; the kills after a save returned last (the coordinator's at the very end),
  // so that the first of them commits a step that earlier kills left temp folders of, and that
  // commit must have removed them; the coordinator's then dies after a save with none to remove.
  const auto order = [&](size_t i) {
    const bool returned = moments[i].what == "returned";
    return std::tuple(returned, returned && moments[i].rank == 0, i);
  };
  std::sort(picked.begin(), picked.end(), [&](size_t a, size_t b) { return order(a) < order(b); });
  std::vector<Moment> chosen;
  for (size_t i : picked) chosen.push_back(moments[i]);
  std::printf("%zu moments in %zu phases in a save on %d ranks; killing at %zu of them\n",
              moments.size(), phase_order.size(), g_args.np, chosen.size());

  int64_t pending = 1;          // the step the next round saves
  int64_t newest = 0;           // the newest committed step
  std::set<int64_t> unswept;    // committed steps whose coordinator may have died before sweeping
  std::map<std::string, int> kills_by_phase;
  int committed_rounds = 0;
  int uncommitted_rounds = 0;
  int swept = 0;                // leftovers of a retried step removed by its committing save
  for (size_t i = 0; i < chosen.size(); ++i) {
    const Moment& m = chosen[i];
    SCOPED_TRACE("round " + std::to_string(i) + ": step " + std::to_string(pending) + ", rank " +
                 std::to_string(m.rank) + " killed at call " + std::to_string(m.call) + " (" + m.what + ")");
    const bool had_leftovers = leftover_steps(root).count(pending) > 0;
    clear_markers(side);
    const fs::path out = side / ("round-" + std::to_string(i) + ".out");
    rc = run_job({"save", ckpt_dir(root, pending).string(), std::to_string(pending), side.string(),
                  std::to_string(m.rank), std::to_string(m.call)},
                 out);
    ASSERT_NE(rc, kHung) << "the job hung: " << slurp(out);
    ASSERT_NE(rc, 0) << "nobody died: " << slurp(out);
    // The killed rank's log ends with the call it died at.
    const auto calls = read_calls(side / ("calls-rank-" + std::to_string(m.rank) + ".log"));
    ASSERT_FALSE(calls.empty());
    ASSERT_EQ(calls.back().number, m.call);
    if (calls.back().what.substr(0, calls.back().what.find(' ')) != m.what.substr(0, m.what.find(' '))) {
      // The coordinator's last calls differ from the dry run's when it removes leftovers.
      std::printf("round %zu: rank %d died at call %llu: %s (the dry run's: %s)\n", i, m.rank,
                  static_cast<unsigned long long>(m.call), calls.back().what.c_str(), m.what.c_str());
    }
    ++kills_by_phase[m.phase];

    // Every folder under a checkpoint name is a committed checkpoint that verifies.
    for (const ckptio::CheckpointEntry& e : ckptio::list_checkpoints(root, full)) {
      if (e.is_temp) continue;
      EXPECT_EQ(ckptio::checkpoint_state_name(e.state), "committed") << e.name << ": " << e.problem;
    }
    const bool committed = fs::exists(ckpt_dir(root, pending));
    const std::set<int> returned = ranks_that_returned(side);
    if (!returned.empty()) {
      EXPECT_TRUE(committed) << "a rank saw its save return but step " << pending << " is not committed";
    }
    if (committed) {
      const ckptio::VerifyReport v = ckptio::verify_checkpoint(ckpt_dir(root, pending), full);
      EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems.front());
      EXPECT_TRUE(v.checksums_checked);
      if (returned.empty()) {
        unswept.insert(pending);
      } else if (had_leftovers) {
        ++swept;
      }
      newest = pending++;
      ++committed_rounds;
    } else {
      ++uncommitted_rounds;
    }
    // The newest visible checkpoint verifies and reads back bit for bit.
    const auto latest = ckptio::latest_checkpoint(root, full);
    ASSERT_TRUE(latest.has_value());
    EXPECT_EQ(latest->global_step, newest);
    expect_reads_back(latest->path);
    // Leftovers: only of the step being retried or of a commit whose sweep may have been cut.
    for (int64_t s : leftover_steps(root)) {
      EXPECT_TRUE(s == pending || unswept.count(s)) << "a temp folder of step " << s << " outlived its commit";
    }
    if (HasFatalFailure()) return;
  }

  // A save nobody kills commits and removes the leftovers of its step.
  clear_markers(side);
  const bool had_leftovers = leftover_steps(root).count(pending) > 0;
  rc = run_job({"save", ckpt_dir(root, pending).string(), std::to_string(pending), side.string(), "-1", "0"},
               side / "final.out");
  ASSERT_EQ(rc, 0) << slurp(side / "final.out");
  EXPECT_EQ(ranks_that_returned(side).size(), size_t(g_args.np));
  EXPECT_EQ(leftover_steps(root).count(pending), 0u);
  if (had_leftovers) ++swept;
  const auto latest = ckptio::latest_checkpoint(root, full);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->global_step, pending);

  std::printf("kills by phase:\n");
  for (const std::string& phase : phase_order) std::printf("  %-52s %d\n", phase.c_str(), kills_by_phase[phase]);
  std::printf("%d rounds committed their step, %d did not; %d saves removed leftovers of their step\n",
              committed_rounds, uncommitted_rounds, swept);
  // The kills must have landed on both sides of the commit, and some leftovers must have been
  // swept by a retry, or the checks above proved little.
  EXPECT_GT(committed_rounds, 0);
  EXPECT_GT(uncommitted_rounds, 0);
  EXPECT_GT(swept, 0);
  if (!HasFailure() && std::getenv("CKPTIO_KEEP_TEST_DIRS") == nullptr) fs::remove_all(work);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const std::string value = argv[i + 1];
    if (key == "--np") {
      g_args.np = std::stoi(value);
    } else if (key == "--rounds") {
      g_args.rounds = std::stoul(value);
    } else if (key == "--seed") {
      g_args.seed = std::stoull(value);
    } else if (key == "--work") {
      g_args.work = value;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", key.c_str());
      return 2;
    }
  }
  return RUN_ALL_TESTS();
}
