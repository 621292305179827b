#include "checkpoint/staging_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/executor.h"
#include "ckptio/error.h"

namespace ckptio::checkpoint {

StagingPool::~StagingPool() {
  if (data_ != nullptr) ::munmap(data_, capacity_);
}

std::span<std::byte> StagingPool::reserve(size_t bytes) {
  if (bytes <= capacity_) return {data_, capacity_};
  if (data_ != nullptr) {
    ::munmap(data_, capacity_);
    data_ = nullptr;
    capacity_ = 0;
  }
  const size_t page = 4096;
  const size_t size = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
  // MAP_POPULATE faults every page in now, so that later copies run at memcpy speed.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
  if (p == MAP_FAILED) {
    throw system_error(errno, "allocating a staging pool of " + std::to_string(size) + " bytes");
  }
  data_ = static_cast<std::byte*>(p);
  capacity_ = size;
  return {data_, capacity_};
}

void parallel_copy(std::span<const CopyTask> tasks, unsigned threads) {
  constexpr size_t kChunk = size_t{8} << 20;
  std::vector<CopyTask> chunks;
  size_t total = 0;
  for (const CopyTask& t : tasks) {
    total += t.bytes;
    for (size_t off = 0; off < t.bytes; off += kChunk) {
      const size_t n = std::min(kChunk, t.bytes - off);
      chunks.push_back({t.src + off, t.dst + off, n});
    }
  }
  if (chunks.empty()) return;
  // Threads pay off only for whole chunks of work.
  const size_t useful = std::max<size_t>(1, total / kChunk);
  detail::parallel_for(chunks.size(), detail::thread_count(threads, std::min(chunks.size(), useful)),
                       [&](size_t i) { std::memcpy(chunks[i].dst, chunks[i].src, chunks[i].bytes); },
                       {.what = "a staging copy thread"});
}

static size_t aligned(size_t n) {
  return (n + kStagingAlignment - 1) / kStagingAlignment * kStagingAlignment;
}

std::vector<std::span<const std::byte>> stage_copies(
    StagingPool& pool, std::span<const std::span<const std::byte>> sources, unsigned threads) {
  size_t total = 0;
  for (const auto& s : sources) total += aligned(s.size());
  std::span<std::byte> memory = pool.reserve(total);
  std::vector<std::span<const std::byte>> out;
  std::vector<CopyTask> tasks;
  out.reserve(sources.size());
  tasks.reserve(sources.size());
  size_t offset = 0;
  for (const auto& s : sources) {
    std::byte* dst = memory.data() + offset;
    tasks.push_back({s.data(), dst, s.size()});
    out.emplace_back(dst, s.size());
    offset += aligned(s.size());
  }
  parallel_copy(tasks, threads);
  return out;
}

}  // namespace ckptio::checkpoint
