#include "checkpoint/thread_start.h"

#include <system_error>

#include "ckptio/error.h"

namespace ckptio::checkpoint {

namespace {
ThreadFactory& factory() {
  static ThreadFactory f;
  return f;
}
}  // namespace

std::thread start_thread(std::function<void()> body) {
  try {
    if (factory()) return factory()(std::move(body));
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    throw Error(ErrorCode::IoError, std::string("cannot start a thread: ") + e.what());
  }
}

void set_thread_factory_for_testing(ThreadFactory f) { factory() = std::move(f); }

}  // namespace ckptio::checkpoint
