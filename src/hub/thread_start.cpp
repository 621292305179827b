#include "hub/thread_start.h"

#include <cerrno>
#include <mutex>
#include <string>
#include <system_error>

#include "ckptio/error.h"

namespace ckptio::hub {
namespace {

struct InjectedFailures {
  std::mutex mu;
  int successes_before = 0;
  int failures = 0;
};

InjectedFailures& injected() {
  static InjectedFailures f;
  return f;
}

bool take_injected_failure() {
  InjectedFailures& f = injected();
  std::lock_guard lock(f.mu);
  if (f.failures == 0) return false;
  if (f.successes_before > 0) {
    --f.successes_before;
    return false;
  }
  --f.failures;
  return true;
}

}  // namespace

std::thread start_thread(std::function<void()> body, std::string_view what) {
  try {
    if (take_injected_failure()) throw std::system_error(EAGAIN, std::generic_category());
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    throw ckptio::system_error(e.code().value(), "cannot start " + std::string(what));
  }
}

void fail_thread_starts(int after, int count) {
  InjectedFailures& f = injected();
  std::lock_guard lock(f.mu);
  f.successes_before = after;
  f.failures = count;
}

}  // namespace ckptio::hub
