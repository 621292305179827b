#include "core/executor.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ckptio/error.h"
#include "core/thread_start.h"

namespace ckptio {

namespace {
// One cap for every default: 16 is what the Run:ai streamer uses for file systems, and past it a
// thread adds a stack and (for conversions) a scratch buffer more often than it adds speed.
constexpr unsigned kDefaultCap = 16;
constexpr unsigned kMaxThreads = 1024;
}  // namespace

unsigned default_threads() {
  if (const char* value = std::getenv("CKPTIO_THREADS"); value != nullptr && *value != '\0') {
    char* end = nullptr;
    errno = 0;
    const long n = std::strtol(value, &end, 10);
    if (errno != 0 || *end != '\0' || n < 1 || n > static_cast<long>(kMaxThreads)) {
      throw Error(ErrorCode::InvalidArgument,
                  "CKPTIO_THREADS must be an integer from 1 to " + std::to_string(kMaxThreads) +
                      ", got '" + printable(value) + "'");
    }
    return static_cast<unsigned>(n);
  }
  return std::clamp(std::thread::hardware_concurrency(), 1u, kDefaultCap);
}

namespace detail {

namespace {
// Set while this thread runs a parallel_for task: a nested parallel_for then stays on it.
thread_local bool t_in_task = false;

class InTask {
 public:
  InTask() : saved_(t_in_task) { t_in_task = true; }
  ~InTask() { t_in_task = saved_; }
  InTask(const InTask&) = delete;
  InTask& operator=(const InTask&) = delete;

 private:
  bool saved_;
};
}  // namespace

unsigned thread_count(int64_t requested, size_t tasks) {
  const uint64_t n = requested > 0 ? static_cast<uint64_t>(requested) : default_threads();
  return static_cast<unsigned>(std::max<uint64_t>(1, std::min<uint64_t>(n, tasks)));
}

void parallel_for(size_t n, unsigned threads, const std::function<void(size_t)>& task,
                  const ParallelOptions& options) {
  if (n == 0) return;
  if (t_in_task) threads = 1;
  threads = static_cast<unsigned>(std::min<size_t>(std::max(threads, 1u), n));
  if (threads == 1) {
    InTask in_task;
    for (size_t i = 0; i < n; ++i) task(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  const auto worker = [&] {
    InTask in_task;
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1);
      if (i >= n) return;
      try {
        task(i);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> helpers;
  helpers.reserve(threads - 1);
  for (unsigned t = 1; t < threads; ++t) {
    try {
      helpers.push_back(start_thread(worker, options.what));
    } catch (const Error&) {
      if (options.shortage == ThreadShortage::RunOnFewer) break;
      failed = true;
      for (std::thread& h : helpers) h.join();
      throw;
    }
  }
  worker();
  for (std::thread& h : helpers) h.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace detail
}  // namespace ckptio
