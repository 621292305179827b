// Starting the threads CheckpointIO uses (background save, staging copy helpers, checksum helper).
// std::thread throws std::system_error when the system has no thread to give (RLIMIT_NPROC,
// memory); here that becomes Error(IoError), which callers report or work around. Tests replace
// the factory to make starting fail on demand.
#pragma once

#include <functional>
#include <thread>

namespace ckptio::checkpoint {

using ThreadFactory = std::function<std::thread(std::function<void()>)>;

// Starts `body` on a new thread. Throws Error(IoError) when no thread can be started.
std::thread start_thread(std::function<void()> body);

// Replaces how threads are started (an empty factory restores std::thread). For tests only; not
// synchronised with threads being started.
void set_thread_factory_for_testing(ThreadFactory factory);

}  // namespace ckptio::checkpoint
