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

// The copy-mode snapshot of a save: copies every source into `pool` (one after the other, each at
// an aligned offset; the pool grows when it must) with parallel_copy and returns where each one now
// lies, in order. The returned spans stay valid until the next stage_copies on the same pool.
std::vector<std::span<const std::byte>> stage_copies(
    StagingPool& pool, std::span<const std::span<const std::byte>> sources, unsigned threads);

}  // namespace ckptio::checkpoint
