#include "format/sharded/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ckptio::detail {

int pick_thread_count(int requested, int cap, size_t tasks) {
  size_t n;
  if (requested > 0) {
    n = static_cast<size_t>(requested);
  } else {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    n = std::min<size_t>(hw, static_cast<size_t>(std::max(cap, 1)));
  }
  n = std::min(n, std::max<size_t>(tasks, 1));
  return static_cast<int>(std::max<size_t>(n, 1));
}

void parallel_for(size_t n, int threads, const std::function<void(size_t)>& task) {
  if (threads <= 1 || n <= 1) {
    for (size_t i = 0; i < n; ++i) task(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto worker = [&] {
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
  const size_t extra = std::min<size_t>(static_cast<size_t>(threads), n) - 1;
  std::vector<std::thread> pool;
  pool.reserve(extra);
  try {
    for (size_t t = 0; t < extra; ++t) pool.emplace_back(worker);
  } catch (...) {
    // Could not start a thread: the ones that started (and this one) still do all the work.
  }
  worker();
  for (auto& t : pool) t.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace ckptio::detail
