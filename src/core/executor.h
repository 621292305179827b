// The one way ckptio runs work in parallel: n independent tasks over a bounded number of
// threads, the caller's thread being one of them. Reads, staging copies, conversions, CRC passes,
// shard writes and downloads all go through parallel_for, so one knob (ckptio::default_threads,
// CKPTIO_THREADS) bounds them all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "ckptio/threads.h"

namespace ckptio::detail {

// Threads for `tasks` tasks: `requested` when > 0, else default_threads(); never more than
// `tasks` and never less than 1.
unsigned thread_count(int64_t requested, size_t tasks);

// What to do when the system cannot start a helper thread (RLIMIT_NPROC, memory).
enum class ThreadShortage {
  RunOnFewer,  // the threads already running, the caller's included, do all the work
  Throw,       // the running tasks finish, no new task starts, Error(IoError) "cannot start <what>"
};

struct ParallelOptions {
  std::string_view what = "a worker thread";  // names the thread in a start failure
  ThreadShortage shortage = ThreadShortage::RunOnFewer;
};

// Runs task(i) for every i in [0, n) on up to `threads` threads, handing out indices in
// increasing order. After a task throws, no new task starts; once every thread has stopped the
// first exception is rethrown. All helper threads are joined before returning either way.
// A parallel_for called from inside a task runs its tasks in order on that thread, so nesting
// neither deadlocks nor multiplies the thread count.
void parallel_for(size_t n, unsigned threads, const std::function<void(size_t)>& task,
                  const ParallelOptions& options = {});

}  // namespace ckptio::detail
