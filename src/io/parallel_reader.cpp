// read_parallel: every range is cut into chunks of at most chunk_bytes source bytes (whole
// elements when converting), and the executor hands the chunks out in order to its threads, so
// neighbouring threads read neighbouring bytes and a slow chunk does not hold up the rest.
#include "ckptio/parallel_reader.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ckptio/error.h"
#include "core/executor.h"

namespace ckptio::io {
namespace {

struct Chunk {
  size_t range;       // index into the ranges
  uint64_t src_off;   // within the range's source
  uint64_t src_bytes;
  uint64_t dst_off;   // within the range's dst
  uint64_t dst_bytes;
};

std::string tensor_label(const ReadRange& r) {
  return r.tensor.empty() ? std::string("read_parallel") : "tensor \"" + std::string(r.tensor) + "\"";
}

// Appends the chunks of range `index`; returns its source bytes. Checks everything that can be
// checked before a byte is read.
uint64_t add_chunks(std::vector<Chunk>& out, const ReadRange& r, size_t index, uint64_t chunk) {
  const uint64_t dst_bytes = r.dst.size();
  if (r.from == r.to) {
    if (r.file == nullptr && r.src.size() != dst_bytes && dst_bytes != 0) {
      throw Error(ErrorCode::InvalidArgument,
                  tensor_label(r) + ": source has " + std::to_string(r.src.size()) +
                      " bytes, destination " + std::to_string(dst_bytes));
    }
    for (uint64_t off = 0; off < dst_bytes; off += chunk) {
      const uint64_t n = std::min(chunk, dst_bytes - off);
      out.push_back({index, off, n, off, n});
    }
    return dst_bytes;
  }
  if (!can_convert(r.from, r.to)) {
    throw Error(ErrorCode::Mismatch, "cannot convert " + tensor_label(r) + " from " +
                                         std::string(dtype_name(r.from)) + " to " +
                                         std::string(dtype_name(r.to)));
  }
  // Convertible dtypes are whole bytes per element.
  const uint64_t in_size = static_cast<uint64_t>(dtype_bits(r.from)) / 8;
  const uint64_t out_size = static_cast<uint64_t>(dtype_bits(r.to)) / 8;
  if (in_size == 0 || out_size == 0 || dst_bytes % out_size != 0) {
    throw Error(ErrorCode::InvalidArgument,
                tensor_label(r) + ": destination of " + std::to_string(dst_bytes) +
                    " bytes is not a whole number of " + std::string(dtype_name(r.to)) +
                    " elements");
  }
  const uint64_t count = dst_bytes / out_size;
  if (r.file == nullptr && r.src.size() != count * in_size) {
    throw Error(ErrorCode::InvalidArgument,
                tensor_label(r) + ": source has " + std::to_string(r.src.size()) + " bytes, " +
                    std::to_string(count) + " " + std::string(dtype_name(r.from)) +
                    " elements need " + std::to_string(count * in_size));
  }
  const uint64_t per_chunk = std::max<uint64_t>(1, chunk / std::max(in_size, out_size));
  for (uint64_t e = 0; e < count; e += per_chunk) {
    const uint64_t n = std::min(per_chunk, count - e);
    out.push_back({index, e * in_size, n * in_size, e * out_size, n * out_size});
  }
  return count * in_size;
}

void run_chunk(const ReadRange& r, const Chunk& c) {
  const std::span<std::byte> dst =
      r.dst.subspan(static_cast<size_t>(c.dst_off), static_cast<size_t>(c.dst_bytes));
  if (r.from == r.to) {
    if (r.file != nullptr) {
      r.file->read_exact(r.offset + c.src_off, dst);
    } else if (!dst.empty()) {
      std::memcpy(dst.data(), r.src.data() + c.src_off, dst.size());
    }
    return;
  }
  const auto count = static_cast<size_t>(c.src_bytes / (static_cast<uint64_t>(dtype_bits(r.from)) / 8));
  if (r.file == nullptr) {
    convert_elements(r.from, r.src.data() + c.src_off, r.to, dst.data(), count);
    return;
  }
  // At most chunk_bytes, one per running thread: the bound on memory beyond the destinations.
  const auto scratch = std::make_unique_for_overwrite<std::byte[]>(static_cast<size_t>(c.src_bytes));
  r.file->read_exact(r.offset + c.src_off, std::span(scratch.get(), static_cast<size_t>(c.src_bytes)));
  convert_elements(r.from, scratch.get(), r.to, dst.data(), count);
}

}  // namespace

std::shared_ptr<std::byte> allocate_read_buffer(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const auto from_heap = [bytes] {
    return std::shared_ptr<std::byte>(new std::byte[bytes == 0 ? 1 : bytes],
                                      std::default_delete<std::byte[]>());
  };
  if (bytes < kHuge) return from_heap();
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t length = (bytes + page - 1) / page * page;
  // Over-map by one huge page so the start can be 2 MiB aligned (THP needs aligned ranges).
  const size_t map_size = length + kHuge;
  void* p = ::mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    // Out of mappings (vm.max_map_count) or address space: the heap may still have room.
    try {
      return from_heap();
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::InvalidArgument,
                  "cannot allocate " + std::to_string(bytes) + " bytes to load into");
    }
  }
  auto* base = static_cast<std::byte*>(p);
  const auto addr = reinterpret_cast<uintptr_t>(base);
  std::byte* aligned = base + ((kHuge - addr % kHuge) % kHuge);
  // Unmap the slack on both sides: callers hold one buffer per large tensor, and the kernel
  // limits the number of mappings a process has (65530 by default), so each buffer is one.
  const size_t head = static_cast<size_t>(aligned - base);
  if (head != 0) ::munmap(base, head);
  if (const size_t tail = map_size - head - length; tail != 0) ::munmap(aligned + length, tail);
  // Advice only: without THP this is a no-op and the memory still works.
  ::madvise(aligned, length, MADV_HUGEPAGE);
  return std::shared_ptr<std::byte>(aligned, [length](std::byte* q) { ::munmap(q, length); });
}

uint64_t read_parallel(std::span<const ReadRange> ranges, const ParallelReadOptions& options) {
  const uint64_t chunk = std::max<uint64_t>(options.chunk_bytes == 0 ? kMaxIoChunk : options.chunk_bytes,
                                            4096);
  std::vector<Chunk> chunks;
  uint64_t total = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const ReadRange& r = ranges[i];
    if (r.file == nullptr && r.src.empty() && !r.dst.empty()) {
      throw Error(ErrorCode::InvalidArgument, tensor_label(r) + ": range without a source");
    }
    total += add_chunks(chunks, r, i, chunk);
  }
  unsigned threads = detail::thread_count(options.threads, chunks.size());
  if (total < options.min_parallel_bytes) threads = 1;
  detail::parallel_for(chunks.size(), threads, [&](size_t i) {
    const Chunk& c = chunks[i];
    const ReadRange& r = ranges[c.range];
    try {
      run_chunk(r, c);
    } catch (const Error& e) {
      if (r.tensor.empty()) throw;
      throw e.annotate(tensor_label(r));
    }
  }, {.what = "a reader thread"});
  return total;
}

}  // namespace ckptio::io
