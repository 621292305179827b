// Starting a worker thread without std::terminate: std::thread throws std::system_error when the
// system has no thread left to give (EAGAIN under a process limit, ENOMEM for the stack), and a
// std::thread destroyed while joinable terminates the process. Callers get a ckptio::Error.
#pragma once

#include <functional>
#include <string_view>
#include <thread>

namespace ckptio::hub {

// std::thread(body); a failure to start is Error(IoError) "cannot start <what>: <reason>".
std::thread start_thread(std::function<void()> body, std::string_view what);

// For tests: after `after` more successful starts, the next `count` calls of start_thread fail as
// the system would (EAGAIN).
void fail_thread_starts(int after, int count);

}  // namespace ckptio::hub
