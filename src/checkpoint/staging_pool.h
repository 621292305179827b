// The copy-mode snapshot: one page-aligned buffer, allocated (and faulted in) once and reused by
// every later save, filled by several threads.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace ckptio::checkpoint {

class StagingPool {
 public:
  StagingPool() = default;
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // At least `bytes` of memory, its pages already mapped. Grows (dropping the old contents) only
  // when a save needs more than any save before it.
  std::span<std::byte> reserve(size_t bytes);
  size_t capacity() const { return capacity_; }

 private:
  std::byte* data_ = nullptr;
  size_t capacity_ = 0;
};

struct CopyTask {
  const std::byte* src = nullptr;
  std::byte* dst = nullptr;
  size_t bytes = 0;
};

// Runs the copies on up to `threads` threads (the caller's included; 0: default_threads()),
// large copies split so that the threads finish together.
void parallel_copy(std::span<const CopyTask> tasks, unsigned threads);

// Offsets inside the pool are rounded up to this (cache lines, and what SIMD loads like).
inline constexpr size_t kStagingAlignment = 64;

}  // namespace ckptio::checkpoint
