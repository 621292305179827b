// The one engine for bulk reads: every load (safetensors, sharded folders, load_checkpoint,
// read_all, the Python bindings) hands it a list of byte ranges and where they go. The ranges are
// cut into chunks, the chunks are handed out in order to a bounded set of threads (the executor
// behind ckptio::default_threads), and each chunk goes straight into its destination (pread, a
// copy out of cached pages, O_DIRECT for cold ones: see ReadPath, or a copy from memory):
// nothing is copied twice, and kernel readahead still works.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "ckptio/dtype.h"
#include "ckptio/io.h"

namespace ckptio::io {

// One range to fill. The source is a file range (file != nullptr) or memory (`src`, for sources
// already mapped or decoded). When `from` != `to` the source holds elements of `from` and `dst`
// receives them converted to `to` (convert_elements); otherwise bytes are copied as they are.
struct ReadRange {
  const ReadableFile* file = nullptr;
  uint64_t offset = 0;              // absolute offset in the file
  std::span<std::byte> dst{};       // filled completely, or an error is thrown
  std::span<const std::byte> src{}; // the source when file == nullptr
  DType from = DType::U8;
  DType to = DType::U8;
  std::string_view tensor{};        // named in errors; may be empty
};

// How file chunks are read.
enum class ReadPath : uint8_t {
  // Chunks of at least fast_path_min_bytes: copied out of the page cache through a mapping when
  // their bytes are cached, read with O_DIRECT (ReadableFile::direct()) when they are known not
  // to be (a cold load: the page cache would only cost a copy and memory), pread otherwise.
  Auto,
  // pread only: no mapping and no O_DIRECT (files others may truncate while they are read).
  Buffered,
  // O_DIRECT for every file chunk where the file has it, pread elsewhere.
  Direct,
};

struct ParallelReadOptions {
  // Reader threads (the calling thread is one of them). 0: ckptio::default_threads().
  unsigned threads = 0;
  // Each pread (and each conversion's scratch buffer) covers at most this many source bytes, so
  // memory beyond the destinations stays below threads x chunk_bytes.
  size_t chunk_bytes = size_t{8} << 20;
  // Below this total the reads run on the calling thread only (thread start-up would cost more).
  uint64_t min_parallel_bytes = uint64_t{16} << 20;
  ReadPath path = ReadPath::Auto;
  // Auto: smaller chunks always pread (the residency check and the O_DIRECT bounce of unaligned
  // edges cost more than they save there).
  uint64_t fast_path_min_bytes = uint64_t{1} << 20;
};

// Fills every range's dst and returns the source bytes read or copied. Ranges may name different
// files and must not overlap in memory. Throws Error(Mismatch) before reading anything when a
// range asks for a conversion convert_elements cannot do, Error(InvalidArgument) for a range
// without a source or whose dst does not hold a whole number of `to` elements. On a failed read
// no new chunk starts and the first error is thrown, naming the file, byte offset and tensor;
// dst contents are then unspecified. Threads are joined before returning either way.
uint64_t read_parallel(std::span<const ReadRange> ranges, const ParallelReadOptions& options = {});

// Uninitialised memory for a load. From 2 MiB on: its own mapping, 2 MiB aligned and, where the
// kernel allows, backed by transparent huge pages, so that filling it takes 512 times fewer page
// faults (from the heap instead when no mapping can be made); smaller sizes come from the heap.
// Freed when the last owner goes. Throws Error(InvalidArgument) when the memory cannot be had.
std::shared_ptr<std::byte> allocate_read_buffer(size_t bytes);

}  // namespace ckptio::io
