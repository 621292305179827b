// Starting the library's own threads (background saves, copy and checksum helpers, downloads).
// std::thread throws std::system_error when the system has no thread to give (RLIMIT_NPROC,
// memory); here that becomes Error(IoError) naming what could not start, which callers report or
// work around instead of letting it reach std::terminate. Tests replace the factory to make
// starting fail on demand.
#pragma once

#include <functional>
#include <string_view>
#include <thread>

namespace ckptio {

using ThreadFactory = std::function<std::thread(std::function<void()>)>;

// Starts `body` on a new thread. Throws Error(IoError) "cannot start <what>: ..." when no thread
// can be started.
std::thread start_thread(std::function<void()> body, std::string_view what);

// Replaces how threads are started (an empty factory restores std::thread). For tests only; not
// synchronised with threads being started.
void set_thread_factory_for_testing(ThreadFactory factory);

}  // namespace ckptio
