// The main of every MPI test program: MPI_Init_thread, the rank's body, then every rank learns
// how many failures all ranks counted, so that the exit status does not depend on which rank
// mpirun reports.
#pragma once

#include <functional>
#include <string>

namespace ckptio::dist::testing {

// Runs body(rank, world) between MPI_Init_thread (MPI_THREAD_SERIALIZED) and MPI_Finalize; body
// returns its failure count, an exception counts one (printed with the rank). Rank 0 prints
// "<name> on <world> ranks: <n> failures". Returns the exit status: 0 when no rank failed.
int run_mpi_test(int argc, char** argv, const std::string& name,
                 const std::function<int(int rank, int world)>& body);

}  // namespace ckptio::dist::testing
