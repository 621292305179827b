// Splitting "copy (or convert) these bytes into that buffer" into bounded chunks that several
// threads can run: shared by the sharded reader and load_checkpoint's other sources.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ckptio/dtype.h"
#include "ckptio/io.h"

namespace ckptio::detail {

inline constexpr uint64_t kReadChunk = uint64_t{64} << 20;

// One piece of work: bytes from a file range (file != nullptr) or from memory (src), copied into
// dst, or converted element-wise from `from` to `to` when they differ.
struct CopyChunk {
  const io::ReadableFile* file = nullptr;
  uint64_t offset = 0;
  std::span<const std::byte> src;  // used when file == nullptr
  uint64_t src_bytes = 0;
  DType from = DType::U8;
  DType to = DType::U8;
  std::span<std::byte> dst;
};

// Appends the chunks for one tensor of `count` elements. `dst` must hold count elements of `to`.
// Throws Error(Mismatch) when from != to and convert_elements cannot convert between them.
void add_copy_chunks(std::vector<CopyChunk>& out, const io::ReadableFile* file, uint64_t offset,
                     std::span<const std::byte> src, DType from, DType to, uint64_t count,
                     std::span<std::byte> dst, std::string_view name);

// Runs the chunks on `threads` threads; each thread converts through its own bounded scratch.
// Returns the source bytes read.
uint64_t run_copy_chunks(const std::vector<CopyChunk>& chunks, int threads);

}  // namespace ckptio::detail
