// The MPI side of ckptio-bench-dist-io: what every rank of one `mpirun -np W` run measures, and the
// model-like state the ranks shard. The driver (dist_io_bench.cpp) launches one run per W and
// turns the results rank 0 writes into the report.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ckptio::bench::dist_io {

// One tensor of the global state, BF16 {rows, cols}. Block tensors are split into row blocks, flat
// ones into ZeRO partitions (flattened, equal parts, boundaries inside rows). Every tensor divides
// evenly by 4 ranks (rows for blocks, elements for flat ranges), so that rank r of 2 holds exactly
// what ranks 2r and 2r+1 of 4 hold; the smallest have 4 rows, so up to 4 ranks.
struct Spec {
  std::string name;
  int64_t rows = 0;
  int64_t cols = 0;
  bool flat = false;
  uint64_t bytes() const { return static_cast<uint64_t>(rows * cols) * 2; }
};

// A model's mix adding up to about `total` bytes: four tensors of total/8 (two row-blocked, two
// flat), up to a thousand 16 KiB tensors, the rest in 1-8 MiB tensors; layouts alternate.
std::vector<Spec> model_specs(uint64_t total);

struct WorkerArgs {
  std::filesystem::path work;    // a folder every rank sees; the run's files go there
  std::filesystem::path result;  // rank 0 writes the results here as JSON
  uint64_t total = 0;            // bytes of the global state
  int repeat = 3;
};

// Runs under mpirun: MPI_Init, the measurements, MPI_Finalize. Returns the exit status.
int run_worker(int argc, char** argv, const WorkerArgs& args);

}  // namespace ckptio::bench::dist_io
