// What every O_DIRECT path shares (the writer's staging, the reader's bounce buffer, the fault
// Env's clamping of short writes): the alignment unit and aligned scratch memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace ckptio::io::detail {

// O_DIRECT alignment of file offsets, lengths and memory addresses (the largest logical block
// size in use).
inline constexpr size_t kDirectBlock = 4096;

inline uint64_t direct_align_down(uint64_t v) { return v & ~uint64_t{kDirectBlock - 1}; }
inline uint64_t direct_align_up(uint64_t v) { return direct_align_down(v + kDirectBlock - 1); }

struct AlignedFree {
  void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte, AlignedFree>;

// `bytes` of uninitialised memory aligned to kDirectBlock; std::bad_alloc when there is none.
inline AlignedBuffer aligned_buffer(size_t bytes) {
  void* p = nullptr;
  if (::posix_memalign(&p, kDirectBlock, bytes) != 0) throw std::bad_alloc();
  return AlignedBuffer(static_cast<std::byte*>(p));
}

}  // namespace ckptio::io::detail
