#include "mpi_test_main.h"

#include <mpi.h>

#include <cstdio>
#include <exception>

namespace ckptio::dist::testing {

int run_mpi_test(int argc, char** argv, const std::string& name,
                 const std::function<int(int rank, int world)>& body) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int rank = 0;
  int world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  int failures = 0;
  try {
    failures = body(rank, world);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d of %d: %s\n", rank, world, e.what());
    ++failures;
  }
  int total = 0;
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) std::printf("%s on %d ranks: %d failures\n", name.c_str(), world, total);
  MPI_Finalize();
  return total == 0 ? 0 : 1;
}

}  // namespace ckptio::dist::testing
