// A bounded fan-out used by the sharded writer and reader: run n independent tasks on a few
// threads, stop handing out work after the first failure, and rethrow that failure.
#pragma once

#include <cstddef>
#include <functional>

namespace ckptio::detail {

// `requested` > 0 is used as is (capped by `tasks`); 0 picks min(hardware threads, cap, tasks).
// Never less than 1.
int pick_thread_count(int requested, int cap, size_t tasks);

// Runs task(i) for every i in [0, n) on `threads` threads (the caller's thread is one of them).
// After a task throws, no new task starts; once all threads have stopped the first exception is
// rethrown. threads <= 1 runs in order on the calling thread.
void parallel_for(size_t n, int threads, const std::function<void(size_t)>& task);

}  // namespace ckptio::detail
