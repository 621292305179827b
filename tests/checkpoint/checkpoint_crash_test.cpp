// SIGKILL crash test: a child process (this binary re-executed) saves checkpoints in a loop, sync,
// async-copy and async-borrow, and is killed at random moments in every phase of a save. After
// each kill the newest committed checkpoint must verify (checksums), load, and equal what the
// child saved for that step; no folder under a final name may be torn.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>

#include "checkpoint/training_state_fixture.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "support/test_util.h"

extern char** environ;

namespace ckptio {
namespace {

namespace fs = std::filesystem;

constexpr int kScale = 6;        // about 1.5 MB per checkpoint
constexpr size_t kKeep = 3;
constexpr int kMaxIssued = 4096;

// Shared between the parent and the child through a mapped file.
struct CrashBoard {
  std::atomic<int> phase;          // last SavePhase reported + 1; 0 = not started
  std::atomic<int> issued_count;   // saves started by the child
  std::atomic<int> done_count;     // saves committed (phase Done)
  std::atomic<int64_t> last_committed;  // global_step of the last committed save, -1 = none
  int64_t issued[kMaxIssued];
};

CrashBoard* map_board(const fs::path& file, bool create) {
  const int fd = ::open(file.c_str(), create ? (O_RDWR | O_CREAT | O_TRUNC) : O_RDWR, 0600);
  if (fd < 0) return nullptr;
  if (create && ::ftruncate(fd, sizeof(CrashBoard)) != 0) return nullptr;
  void* p = ::mmap(nullptr, sizeof(CrashBoard), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  return p == MAP_FAILED ? nullptr : static_cast<CrashBoard*>(p);
}

// The child: resume after the newest committed checkpoint and save forever.
[[noreturn]] void run_child(const char* exp, const char* board_file, const char* mode) {
  CrashBoard* board = map_board(board_file, false);
  if (board == nullptr) std::_Exit(3);
  try {
    CheckpointOptions o;
    o.keep_n_latest = kKeep;
    o.async = std::string(mode) != "sync";
    o.snapshot = std::string(mode) == "borrow" ? SnapshotMode::Borrow : SnapshotMode::Copy;
    o.warn = [](const std::string&) {};
    // The step comes with the report: with async saves, Done of step N is reported from inside
    // save(N + 1), after the child has already recorded N + 1 as issued.
    o.on_phase = [board](SavePhase p, const SaveInfo& save) {
      if (p == SavePhase::Done) {
        board->last_committed.store(save.global_step);
        board->done_count.fetch_add(1);
      }
      board->phase.store(static_cast<int>(p) + 1);
    };
    CheckpointIO io(exp, o);
    auto latest = io.latest();
    int64_t step = latest ? latest->global_step + 1 : 1;
    // Borrow mode: the previous state must stay untouched until the next save returns.
    std::optional<TrainingState> previous, current;
    for (;; ++step) {
      current = testing::make_training_state(step, kScale);
      const int k = board->issued_count.load();
      if (k >= kMaxIssued) std::_Exit(4);
      board->issued[k] = step;
      board->issued_count.store(k + 1);
      io.save(*current);
      previous = std::move(current);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash child failed: %s\n", e.what());
    std::_Exit(5);
  }
}

// Runs before gtest's main when this binary is re-executed as the child.
const bool kIsChild = [] {
  if (const char* exp = std::getenv("CKPTIO_CRASH_CHILD_EXP")) {
    run_child(exp, std::getenv("CKPTIO_CRASH_CHILD_BOARD"), std::getenv("CKPTIO_CRASH_CHILD_MODE"));
  }
  return false;
}();

pid_t spawn_child(const fs::path& exp, const fs::path& board, const std::string& mode) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("CKPTIO_CRASH_CHILD_EXP", exp.c_str(), 1);
    ::setenv("CKPTIO_CRASH_CHILD_BOARD", board.c_str(), 1);
    ::setenv("CKPTIO_CRASH_CHILD_MODE", mode.c_str(), 1);
    char self[] = "/proc/self/exe";
    char* argv[] = {self, nullptr};
    ::execve("/proc/self/exe", argv, environ);
    std::_Exit(127);
  }
  return pid;
}

TEST(CheckpointCrash, SigkillAtRandomMomentsNeverLosesTheLatestCommittedCheckpoint) {
  testing::TempDir dir;
  const fs::path exp = dir / "exp";
  const fs::path board_file = dir / "board";
  CheckpointOptions quiet;
  quiet.warn = [](const std::string&) {};
  CheckpointIO reader(exp, quiet);
  std::mt19937_64 rng(std::random_device{}());
  const char* modes[] = {"sync", "copy", "borrow"};
  // Target phases: the child is killed once it reaches the phase, after a random extra delay.
  const SavePhase targets[] = {SavePhase::WriteFiles, SavePhase::WriteManifest, SavePhase::Commit,
                               SavePhase::Prune, SavePhase::Done, SavePhase::Snapshot};
  std::map<std::string, int> kills_by_phase;
  int64_t highest_committed = -1;
  constexpr int kKills = 54;
  for (int kill = 0; kill < kKills; ++kill) {
    const std::string mode = modes[kill % 3];
    SavePhase target = targets[(kill / 3) % 6];
    if (target == SavePhase::Snapshot && mode != "copy") target = SavePhase::WriteFiles;
    CrashBoard* board = map_board(board_file, true);
    ASSERT_NE(board, nullptr);
    board->last_committed.store(-1);
    const pid_t pid = spawn_child(exp, board_file, mode);
    ASSERT_GT(pid, 0);
    // Wait until the child has committed at least one save of its own (so a kill can hit any
    // phase of a later one) and reached the target phase, then add a random delay.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    const int min_issued = 2 + static_cast<int>(rng() % 2);
    while (std::chrono::steady_clock::now() < deadline) {
      if (board->issued_count.load() >= min_issued &&
          board->phase.load() == static_cast<int>(target) + 1) {
        break;
      }
      int status = 0;
      ASSERT_EQ(::waitpid(pid, &status, WNOHANG), 0) << "child exited early, status " << status;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 1500));
    const int phase_at_kill = board->phase.load();
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child was not killed but exited, status " << status;
    kills_by_phase[phase_at_kill == 0 ? "start"
                                      : std::string(save_phase_name(
                                            static_cast<SavePhase>(phase_at_kill - 1)))]++;

    // No torn folder under a final name.
    for (const CheckpointEntry& e : list_checkpoints(exp, {.depth = VerifyDepth::Full})) {
      if (!e.is_temp) {
        EXPECT_EQ(e.state, CheckpointState::Committed) << e.name << ": " << e.problem;
      }
    }
    const int64_t committed = board->last_committed.load();
    highest_committed = std::max(highest_committed, committed);
    auto latest = latest_checkpoint(exp, {.depth = VerifyDepth::Full, .warn = quiet.warn});
    if (highest_committed >= 0) {
      ASSERT_TRUE(latest.has_value()) << "kill " << kill;
      EXPECT_GE(latest->global_step, highest_committed) << "kill " << kill;
      const int issued = board->issued_count.load();
      ASSERT_GT(issued, 0);
      EXPECT_LE(latest->global_step, board->issued[issued - 1]) << "kill " << kill;
      EXPECT_TRUE(verify_checkpoint(latest->path, {.depth = VerifyDepth::Full}).ok);
      testing::expect_checkpoint_equals(reader, "latest",
                                        testing::make_training_state(latest->global_step, kScale));
      highest_committed = latest->global_step;
    }
    ::munmap(board, sizeof(CrashBoard));
    if (::testing::Test::HasFatalFailure()) return;
  }
  std::string histogram;
  for (const auto& [phase, n] : kills_by_phase) histogram += phase + "=" + std::to_string(n) + " ";
  std::printf("kills by phase: %s\n", histogram.c_str());
  RecordProperty("kills_by_phase", histogram);
  // Kills landed inside the writing, the commit and between saves, not only in one phase.
  EXPECT_GE(kills_by_phase.size(), 4u) << histogram;
  EXPECT_GT(highest_committed, 0);
}

}  // namespace
}  // namespace ckptio
