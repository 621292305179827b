// Parallel reads straight into destination buffers, the way the Run:ai streamer loads: the total
// bytes of all requests are divided evenly among threads, each thread reads its contiguous share
// in chunks with pread (kernel readahead still works), and nothing is copied twice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "ckptio/io.h"

namespace ckptio::io {

struct ReadRequest {
  const ReadableFile* file = nullptr;
  uint64_t offset = 0;           // absolute offset in the file
  std::span<std::byte> dst;      // filled completely, or an error is thrown
};

struct ParallelReadOptions {
  // Reader threads (the calling thread is one of them). 0: min(16, hardware threads * 2).
  unsigned threads = 0;
  // Each pread moves at most this many bytes.
  size_t chunk_bytes = size_t{8} << 20;
  // Below this total the reads run on the calling thread only (thread start-up would cost more).
  uint64_t min_parallel_bytes = uint64_t{16} << 20;
};

// Fills every request's dst. Requests may target different files and must not overlap in
// memory. On failure every thread stops at its next chunk and the first error (naming the file
// and byte offset) is thrown; dst contents are then unspecified. Threads are joined before
// returning either way.
void read_parallel(std::span<const ReadRequest> requests, const ParallelReadOptions& options = {});

// Uninitialised memory for a load. From 2 MiB on: its own mapping, 2 MiB aligned and, where the
// kernel allows, backed by transparent huge pages, so that filling it takes 512 times fewer page
// faults (from the heap instead when no mapping can be made); smaller sizes come from the heap.
// Freed when the last owner goes. Throws Error(InvalidArgument) when the memory cannot be had.
std::shared_ptr<std::byte> allocate_read_buffer(size_t bytes);

}  // namespace ckptio::io
