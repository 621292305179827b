// The Communicator over MPI, in its own library (ckptio_mpi) so that programs that never run under
// MPI do not link it. Built only when CMake finds MPI.
//
// Every collective is non-blocking underneath (MPI_Iallgather(v), MPI_Igatherv, MPI_Ibcast,
// MPI_Ibarrier) and is polled with MPI_Test until the communicator's timeout: a rank that never
// arrives makes the others throw Error(Timeout) naming the collective (and, for the gathers, the
// ranks whose contribution did not arrive when that can be told) instead of hanging. After any
// throw the communicator is broken: every later call throws Error(Timeout or the first error's
// code) at once, because the outstanding MPI request can never be matched again safely.
//
// MPI must be initialised (MPI_Init_thread) before and finalised after; the communicator
// duplicates `comm`, so its traffic never mixes with the program's own. It holds no lock: one
// thread at a time may call it, but that need not be the thread that made it (an async
// dist::CheckpointIO save calls it from a background thread). MPI allows that under
// MPI_THREAD_SERIALIZED when no other thread calls MPI meanwhile, and under MPI_THREAD_MULTIPLE
// otherwise; with MPI_THREAD_FUNNELED or less, call it from the main thread only (save
// synchronously).
#pragma once

#include <mpi.h>

#include <chrono>
#include <memory>

#include "ckptio/communicator.h"

namespace ckptio::dist {

std::unique_ptr<Communicator> mpi_communicator(MPI_Comm comm, std::chrono::milliseconds timeout);

}  // namespace ckptio::dist
