// The MPI side of the crash and fault tests, one job per call (run by crash_test.cpp and ctest):
//
//   dist_mpi_crash_worker save DIR STEP SIDE KILL_RANK KILL_AT
//     Every rank saves the shared test state (tests/dist/dist_helpers.h) to DIR through a KillEnv
//     (tests/dist/kill_env.h) that logs each of the rank's calls to SIDE/calls-rank-<r>.log and
//     kills rank KILL_RANK with SIGKILL at its call number KILL_AT (0: nobody dies). A rank whose
//     save returned writes SIDE/saved-rank-<r>, then counts one more moment, "returned", so that a
//     rank can also die right after its save succeeded.
//
//   dist_mpi_crash_worker fault ROOT
//     An injected I/O error on one rank fails every rank's save and commits nothing: an EIO on the
//     last rank's first shard write, then an ENOSPC on the coordinator's manifest write. Every
//     rank must throw the failing rank's code with a message naming that rank, and ROOT must be
//     left empty (no checkpoint, no temp folder).
//
// The communicator's timeout (30 s) bounds a survivor's wait if mpirun did not end the job when a
// rank died; the driver's limit per job (120 s) is above it.
#include <mpi.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/mpi_communicator.h"
#include "mpi_test_main.h"
#include "dist_helpers.h"
#include "kill_env.h"

namespace {

namespace dist = ckptio::dist;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr auto kTimeout = 30s;

struct State {
  std::vector<std::vector<std::byte>> buffers;
  std::vector<dist::SaveItem> items;
};

State state_of(int rank, int world) {
  State s;
  for (const dist::testing::Spec& spec : dist::testing::specs()) {
    const auto global = dist::testing::global_bytes(spec.name, spec.dtype, spec.shape);
    for (dist::ShardedTensor& t : dist::testing::pieces_for(spec.name, spec.dtype, spec.shape, spec.saved, rank, world)) {
      s.buffers.push_back(dist::testing::local_bytes(t, global));
      s.items.push_back({std::move(t), {}});
    }
  }
  for (size_t i = 0; i < s.items.size(); ++i) s.items[i].bytes = s.buffers[i];
  return s;
}

int save_with_kill(int rank, int world, char** argv) {
  const fs::path dir = argv[2];
  const int64_t step = std::stoll(argv[3]);
  const fs::path side = argv[4];
  const int kill_rank = std::stoi(argv[5]);
  const uint64_t kill_at = std::stoull(argv[6]);
  const fs::path log_path = side / ("calls-rank-" + std::to_string(rank) + ".log");
  std::FILE* log = std::fopen(log_path.c_str(), "w");
  if (!log) {
    std::fprintf(stderr, "rank %d: cannot open %s\n", rank, log_path.c_str());
    return 1;
  }
  dist::testing::KillEnv env(rank == kill_rank ? kill_at : 0, log);
  const State s = state_of(rank, world);
  const auto comm = dist::mpi_communicator(MPI_COMM_WORLD, kTimeout);
  dist::SaveOptions options;
  options.global_step = step;
  options.env = &env;
  int failures = 0;
  try {
    (void)dist::save(*comm, dir, s.items, options);
    std::ofstream(side / ("saved-rank-" + std::to_string(rank))) << dir.string() << "\n";
    env.step("returned");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d of %d: %s\n", rank, world, e.what());
    ++failures;
  }
  std::fclose(log);
  return failures;
}

// Runs one save with `faulty` as rank `bad`'s Env; returns the failures found.
int expect_failed_save(int rank, int world, const fs::path& root, int bad, ckptio::io::Env& faulty,
                       ckptio::ErrorCode code, const std::string& says) {
  const fs::path dir = root / "ckpt";
  const State s = state_of(rank, world);
  const auto comm = dist::mpi_communicator(MPI_COMM_WORLD, kTimeout);
  dist::SaveOptions options;
  if (rank == bad) options.env = &faulty;
  int failures = 0;
  try {
    (void)dist::save(*comm, dir, s.items, options);
    std::fprintf(stderr, "rank %d of %d: the save succeeded despite the fault on rank %d\n", rank, world, bad);
    ++failures;
  } catch (const ckptio::Error& e) {
    if (e.code() != code || e.message().find(says) == std::string::npos) {
      std::fprintf(stderr, "rank %d of %d: expected %s naming '%s', got: %s\n", rank, world,
                   std::string(ckptio::error_code_name(code)).c_str(), says.c_str(), e.what());
      ++failures;
    }
  }
  comm->barrier();  // every rank is out of the save before rank 0 looks at the folder
  if (rank == 0 && !fs::is_empty(root)) {
    for (const auto& e : fs::directory_iterator(root)) {
      std::fprintf(stderr, "rank 0: left behind after the failed save: %s\n", e.path().c_str());
    }
    ++failures;
  }
  return failures;
}

int faults(int rank, int world, const fs::path& root) {
  if (rank == 0) {
    fs::remove_all(root);
    fs::create_directories(root);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  int failures = 0;
  {
    const int bad = world - 1;
    ckptio::io::FaultInjectingEnv faulty;
    faulty.inject(ckptio::io::FaultOp::Write, 1, EIO);
    failures += expect_failed_save(rank, world, root, bad, faulty, ckptio::ErrorCode::IoError,
                                   "writing shards: rank " + std::to_string(bad) + " of " +
                                       std::to_string(world) + " failed");
  }
  {
    ckptio::io::FaultInjectingEnv faulty;
    faulty.inject(ckptio::io::Fault{ckptio::io::FaultOp::Write, 1, ENOSPC, "ckptio.manifest.json", false});
    failures += expect_failed_save(rank, world, root, 0, faulty, ckptio::ErrorCode::NoSpace,
                                   "committing: rank 0 of " + std::to_string(world) + " failed");
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  return ckptio::dist::testing::run_mpi_test(
      argc, argv, "dist_mpi_crash_worker " + mode, [&](int rank, int world) {
        if (mode == "save" && argc == 7) return save_with_kill(rank, world, argv);
        if (mode == "fault" && argc == 3) return faults(rank, world, argv[2]);
        std::fprintf(stderr, "usage: dist_mpi_crash_worker save DIR STEP SIDE KILL_RANK KILL_AT | fault ROOT\n");
        return 1;
      });
}
