#include "core/thread_start.h"

#include <string>
#include <system_error>

#include "ckptio/error.h"

namespace ckptio {

namespace {
ThreadFactory& factory() {
  static ThreadFactory f;
  return f;
}
}  // namespace

std::thread start_thread(std::function<void()> body, std::string_view what) {
  try {
    if (factory()) return factory()(std::move(body));
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    throw system_error(e.code().value(), "cannot start " + std::string(what));
  }
}

void set_thread_factory_for_testing(ThreadFactory f) { factory() = std::move(f); }

}  // namespace ckptio
