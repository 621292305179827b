// mpi-train: a toy sharded training loop under MPI that checkpoints its whole state with
// ckptio::dist::CheckpointIO and resumes it, on the same or another number of ranks.
//
//   mpirun -n 4 mpi-train /tmp/exp 3     # trains 3 steps, a checkpoint per step (2 kept)
//   mpirun -n 2 mpi-train /tmp/exp 3     # resumes from the newest on 2 ranks, 3 more steps
//
// The model is one [rows, cols] weight split by rows, the optimizer state one ZeRO partition
// per rank (as ColossalAI's low-level ZeRO keeps it), the sampler a per-rank position. Every
// element is a function of the step alone, so each resumed run checks what it loaded.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckptio/dist_checkpoint_io.h"
#include "ckptio/error.h"
#include "ckptio/mpi_communicator.h"

namespace {

using ckptio::DType;
namespace dist = ckptio::dist;

constexpr int64_t kRows = 64;
constexpr int64_t kCols = 32;

// What this rank holds of the training state.
struct Shards {
  dist::ShardedTensor weight;  // its rows
  dist::ShardedTensor moment;  // its ZeRO partition of the flattened weight
  std::vector<float> w, m;
};

Shards shards(int rank, int world) {
  Shards s;
  const int64_t per = (kRows + world - 1) / world;
  const int64_t begin = std::min<int64_t>(kRows, per * rank);
  const int64_t rows = std::min<int64_t>(kRows, begin + per) - begin;
  s.weight = dist::ShardedTensor::block("weight", DType::F32, {kRows, kCols}, {begin, 0},
                                        {rows, kCols});
  s.moment = dist::ShardedTensor::zero_partition("state.0.exp_avg", DType::F32, {kRows, kCols},
                                                 rank, world);
  s.w.resize(static_cast<size_t>(rows * kCols));
  s.m.resize(s.moment.flat_length);
  return s;
}

// The state after `step` steps: element e of the weight is e + step, of the moment e * step.
void set_step(Shards& s, int64_t step) {
  for (size_t i = 0; i < s.w.size(); ++i) {
    s.w[i] = static_cast<float>(s.weight.box.offsets[0] * kCols + static_cast<int64_t>(i) + step);
  }
  for (size_t i = 0; i < s.m.size(); ++i) {
    const uint64_t e = s.moment.flat_begin + i;
    s.m[i] = e < kRows * kCols ? static_cast<float>(e * step) : 0.0f;  // padding stays zero
  }
}

bool at_step(const Shards& s, int64_t step) {
  Shards expected = s;
  set_step(expected, step);
  return expected.w == s.w && expected.m == s.m;
}

int run(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: mpi-train <experiment-dir> <steps>\n");
    return 2;
  }
  int provided = 0;
  MPI_Query_thread(&provided);
  // The checkpointer's own communicator (a duplicate of MPI_COMM_WORLD): an async save runs its
  // collectives on it in a background thread while training goes on.
  auto comm = dist::mpi_communicator(MPI_COMM_WORLD, std::chrono::minutes(5));
  const int rank = comm->rank();
  const int world = comm->size();
  dist::CheckpointIOOptions options;
  options.keep_n_latest = 2;
  // Background saves need MPI calls from two threads at once.
  options.async = provided == MPI_THREAD_MULTIPLE;
  dist::CheckpointIO io(*comm, argv[1], options);

  Shards s = shards(rank, world);
  int64_t step = 0;
  int64_t position = 0;  // this rank's sampler position
  if (io.latest()) {
    dist::TrainingLoadTargets targets;
    targets.model = dist::ComponentTarget{{{s.weight, std::as_writable_bytes(std::span(s.w))}}};
    targets.optimizer = dist::ComponentTarget{{{s.moment, std::as_writable_bytes(std::span(s.m))}}};
    targets.sampler = dist::ComponentTarget{};
    dist::TrainingLoadOptions load_options;
    // Saved on another number of ranks, the per-rank positions do not map onto these ranks:
    // start every rank at rank 0's.
    load_options.per_rank = dist::PerRankRule::Rank0;
    const dist::TrainingLoadResult r = io.load("latest", targets, load_options);
    step = r.running.global_step;
    position = nlohmann::json::parse(r.values.at("sampler")).value("position", int64_t{0});
    if (!at_step(s, step)) {
      std::fprintf(stderr, "rank %d: the loaded state is not that of step %lld\n", rank,
                   static_cast<long long>(step));
      return 1;
    }
    if (rank == 0) {
      std::printf("resumed step %lld from %s (saved on %d ranks) on %d ranks\n",
                  static_cast<long long>(step), r.path.c_str(), r.saved_world_size, world);
    }
  }
  for (int64_t i = 0; i < std::atoi(argv[2]); ++i) {
    ++step;
    set_step(s, step);  // the "training step"
    position += 10;
    dist::TrainingState state;
    state.model = dist::ComponentState{{{s.weight, std::as_bytes(std::span(s.w))}}};
    state.optimizer = dist::ComponentState{{{s.moment, std::as_bytes(std::span(s.m))}},
                                           R"({"param_groups": [{"lr": 0.001, "params": [0]}]})"};
    state.sampler = dist::ComponentState{{}, "{\"position\": " + std::to_string(position) + "}"};
    state.running = {.epoch = 0, .step = step, .global_step = step, .batch_size = 16,
                     .actual_update_step = step};
    // Copy mode: returns once the bytes are staged; the next step may change them at once.
    (void)io.save(state);
  }
  io.wait();
  if (rank == 0) std::printf("saved step %lld on %d ranks\n", static_cast<long long>(step), world);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rc = 1;
  try {
    rc = run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi-train: %s\n", e.what());
  }
  MPI_Finalize();
  return rc;
}
