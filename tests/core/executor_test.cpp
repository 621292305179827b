// The executor: every task runs once and has finished when parallel_for returns, the first error
// comes back with its message, nested calls neither deadlock nor add threads, a thread that
// cannot start is worked around (or reported, when asked), and the one knob (a `threads` value,
// else CKPTIO_THREADS, else the hardware) bounds the threads used.
#include "core/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <latch>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/threads.h"
#include "core/thread_start.h"

namespace ckptio::detail {
namespace {

// Sets CKPTIO_THREADS for one test and restores what was there.
class ThreadsVariable {
 public:
  explicit ThreadsVariable(const char* value) {
    if (const char* old = std::getenv("CKPTIO_THREADS")) saved_ = old;
    if (value) {
      ::setenv("CKPTIO_THREADS", value, 1);
    } else {
      ::unsetenv("CKPTIO_THREADS");
    }
  }
  ~ThreadsVariable() {
    if (saved_) {
      ::setenv("CKPTIO_THREADS", saved_->c_str(), 1);
    } else {
      ::unsetenv("CKPTIO_THREADS");
    }
  }

 private:
  std::optional<std::string> saved_;
};

// The distinct threads that ran tasks.
class ThreadSet {
 public:
  void add() {
    std::lock_guard lock(mu_);
    ids_.insert(std::this_thread::get_id());
  }
  size_t size() const {
    std::lock_guard lock(mu_);
    return ids_.size();
  }
  bool only(std::thread::id id) const {
    std::lock_guard lock(mu_);
    return ids_.size() == 1 && *ids_.begin() == id;
  }

 private:
  mutable std::mutex mu_;
  std::set<std::thread::id> ids_;
};

TEST(Executor, EveryTaskRunsOnceAndHasFinishedOnReturn) {
  for (unsigned threads : {1u, 2u, 4u, 16u}) {
    SCOPED_TRACE(threads);
    constexpr size_t kN = 2000;
    std::vector<std::atomic<int>> runs(kN);
    std::vector<uint64_t> results(kN, 0);
    parallel_for(kN, threads, [&](size_t i) {
      ++runs[i];
      uint64_t x = i;
      for (int k = 0; k < 1000; ++k) x = x * 6364136223846793005u + 1442695040888963407u;
      results[i] = x | 1;  // written last: nonzero only once the task has finished
    });
    for (size_t i = 0; i < kN; ++i) {
      ASSERT_EQ(runs[i].load(), 1) << i;
      ASSERT_NE(results[i], 0u) << i;
    }
  }
  parallel_for(0, 4, [](size_t) { FAIL() << "a task for n = 0"; });
}

TEST(Executor, TheFirstErrorComesBackWithItsMessageAfterEveryTaskStopped) {
  std::atomic<int> running{0};
  try {
    parallel_for(500, 4, [&](size_t i) {
      ++running;
      if (i == 37) {
        --running;
        throw Error(ErrorCode::Corrupt, "'/data/x.safetensors' at byte 4096: tensor 37 is bad");
      }
      uint64_t x = i;
      for (int k = 0; k < 10000; ++k) x = x * 6364136223846793005u + 1;
      volatile uint64_t sink = x;
      (void)sink;
      --running;
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_EQ(e.message(), "'/data/x.safetensors' at byte 4096: tensor 37 is bad");
  }
  EXPECT_EQ(running.load(), 0);
  // Not only ckptio::Error: any exception is carried as it is.
  EXPECT_THROW(parallel_for(10, 3, [](size_t i) {
                 if (i == 9) throw std::out_of_range("nine");
               }),
               std::out_of_range);
}

TEST(Executor, NestedCallsFinishOnTheThreadsAlreadyRunning) {
  ThreadSet threads;
  std::atomic<int> inner_runs{0};
  parallel_for(8, 4, [&](size_t) {
    threads.add();
    parallel_for(100, 4, [&](size_t) {
      threads.add();
      parallel_for(3, 4, [&](size_t) {
        threads.add();
        ++inner_runs;
      });
    });
  });
  EXPECT_EQ(inner_runs.load(), 8 * 100 * 3);
  EXPECT_LE(threads.size(), 4u);
}

TEST(Executor, TheKnobBoundsTheThreads) {
  {
    ThreadsVariable v("3");
    // ASSERT: the latch below would wait forever with fewer than three threads.
    ASSERT_EQ(default_threads(), 3u);
    ASSERT_EQ(thread_count(0, 3), 3u);
    EXPECT_EQ(thread_count(0, 1000), 3u);
    EXPECT_EQ(thread_count(-1, 1000), 3u);
    EXPECT_EQ(thread_count(0, 2), 2u);  // never more threads than tasks
    EXPECT_EQ(thread_count(7, 1000), 7u);  // an explicit count wins over the variable
    // Three tasks that each wait for the other two: they finish only when three threads run.
    std::latch all_there(3);
    ThreadSet used;
    parallel_for(3, thread_count(0, 3), [&](size_t) {
      used.add();
      all_there.arrive_and_wait();
    });
    EXPECT_EQ(used.size(), 3u);
    ThreadSet many;
    parallel_for(1000, thread_count(0, 1000), [&](size_t) { many.add(); });
    EXPECT_LE(many.size(), 3u);
  }
  {
    ThreadsVariable v("1");
    ThreadSet used;
    parallel_for(1000, thread_count(0, 1000), [&](size_t) { used.add(); });
    EXPECT_TRUE(used.only(std::this_thread::get_id()));
  }
  {
    ThreadsVariable v(nullptr);
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    EXPECT_EQ(default_threads(), std::min(hw, 16u));
  }
}

TEST(Executor, ABadThreadsVariableIsAnError) {
  for (const char* bad : {"0", "-2", "four", "8x", "100000"}) {
    SCOPED_TRACE(bad);
    ThreadsVariable v(bad);
    try {
      default_threads();
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(e.message().find("CKPTIO_THREADS"), std::string::npos) << e.message();
    }
  }
}

TEST(Executor, AThreadThatCannotStartIsWorkedAroundOrReported) {
  set_thread_factory_for_testing([](std::function<void()>) -> std::thread {
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                            "thread");
  });
  ThreadSet used;
  std::atomic<int> runs{0};
  parallel_for(50, 4, [&](size_t) {
    used.add();
    ++runs;
  });
  EXPECT_EQ(runs.load(), 50);
  EXPECT_TRUE(used.only(std::this_thread::get_id()));
  try {
    parallel_for(50, 4, [](size_t) {}, {.what = "a download thread", .shortage = ThreadShortage::Throw});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
    EXPECT_NE(e.message().find("cannot start a download thread"), std::string::npos) << e.message();
  }
  set_thread_factory_for_testing({});
}

}  // namespace
}  // namespace ckptio::detail
