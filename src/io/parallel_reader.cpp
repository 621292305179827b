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
  size_t range;       // index into the runs
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
    // From a file, chunks end at file offsets that are multiples of the chunk size, so that
    // every chunk but a range's first starts at a page and huge page boundary of the file and,
    // as read_all_owned lays memory out in the file's phase, of the destination. Cut from the
    // range's start instead, neighbouring chunks (on different threads) share a huge page of a
    // fresh destination, and the whole load ran ~14% slower (1 GiB from the page cache, 8 MiB
    // chunks, 2 threads: 0.081 s against 0.071 s); O_DIRECT also reads whole blocks this way.
    const uint64_t phase = r.file != nullptr ? r.offset % chunk : 0;
    for (uint64_t off = 0; off < dst_bytes;) {
      const uint64_t n = std::min(chunk - (off == 0 ? phase : 0), dst_bytes - off);
      out.push_back({index, off, n, off, n});
      off += n;
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

// One file chunk by the path the options choose (see ReadPath).
void read_file(const ReadableFile& file, uint64_t offset, std::span<std::byte> dst,
               const ParallelReadOptions& options) {
  if (options.path == ReadPath::Direct) {
    if (const ReadableFile* direct = file.direct()) return direct->read_exact(offset, dst);
  } else if (options.path == ReadPath::Auto && dst.size() >= options.fast_path_min_bytes) {
    switch (file.read_if_cached(offset, dst)) {
      case ReadableFile::CachedRead::Done: return;
      case ReadableFile::CachedRead::NotCached:
        if (const ReadableFile* direct = file.direct()) return direct->read_exact(offset, dst);
        break;
      case ReadableFile::CachedRead::Unknown: break;
    }
  }
  file.read_exact(offset, dst);
}

void run_chunk(const ReadRange& r, const Chunk& c, const ParallelReadOptions& options) {
  const std::span<std::byte> dst =
      r.dst.subspan(static_cast<size_t>(c.dst_off), static_cast<size_t>(c.dst_bytes));
  if (r.from == r.to) {
    if (r.file != nullptr) {
      read_file(*r.file, r.offset + c.src_off, dst, options);
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
  read_file(*r.file, r.offset + c.src_off, std::span(scratch.get(), static_cast<size_t>(c.src_bytes)),
            options);
  convert_elements(r.from, scratch.get(), r.to, dst.data(), count);
}

// Ranges that continue one another in the same file and in memory (read_all_owned's tensors,
// laid out in memory as in the file) are read as one: the chunks then have the full chunk size
// whatever the tensor sizes, and O_DIRECT has unaligned edges only at the ends of the run.
struct Run {
  ReadRange range;  // the members merged (the one member when alone)
  size_t first;     // the members: ranges[first..last]
  size_t last;
};

bool continues(const ReadRange& prev, const ReadRange& next) {
  return next.file != nullptr && next.file == prev.file && prev.from == prev.to &&
         next.from == next.to && prev.offset + prev.dst.size() == next.offset &&
         !prev.dst.empty() && !next.dst.empty() &&
         prev.dst.data() + prev.dst.size() == next.dst.data();
}

std::vector<Run> merge_runs(std::span<const ReadRange> ranges) {
  std::vector<Run> runs;
  runs.reserve(ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (!runs.empty() && runs.back().last + 1 == i && continues(ranges[i - 1], ranges[i])) {
      Run& run = runs.back();
      run.range.dst = std::span(run.range.dst.data(), run.range.dst.size() + ranges[i].dst.size());
      run.last = i;
    } else {
      runs.push_back({ranges[i], i, i});
    }
  }
  return runs;
}

// The tensors a failed chunk of `run` covered, for its error: 'tensor "a"' or
// 'tensors "a" .. "c"'; empty when they have no names.
std::string run_label(const Run& run, std::span<const ReadRange> ranges, const Chunk& c) {
  if (run.first == run.last) return ranges[run.first].tensor.empty() ? "" : tensor_label(ranges[run.first]);
  const ReadRange* first = nullptr;
  const ReadRange* last = nullptr;
  uint64_t pos = 0;
  for (size_t i = run.first; i <= run.last; ++i) {
    const uint64_t end = pos + ranges[i].dst.size();
    if (end > c.src_off && pos < c.src_off + c.src_bytes) {
      if (first == nullptr) first = &ranges[i];
      last = &ranges[i];
    }
    pos = end;
  }
  if (first == nullptr || (first->tensor.empty() && last->tensor.empty())) return "";
  if (first == last) return tensor_label(*first);
  return "tensors \"" + std::string(first->tensor) + "\" .. \"" + std::string(last->tensor) + "\"";
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
  for (const ReadRange& r : ranges) {
    if (r.file == nullptr && r.src.empty() && !r.dst.empty()) {
      throw Error(ErrorCode::InvalidArgument, tensor_label(r) + ": range without a source");
    }
  }
  const std::vector<Run> runs = merge_runs(ranges);
  std::vector<Chunk> chunks;
  uint64_t total = 0;
  for (size_t i = 0; i < runs.size(); ++i) total += add_chunks(chunks, runs[i].range, i, chunk);
  unsigned threads = detail::thread_count(options.threads, chunks.size());
  if (total < options.min_parallel_bytes) threads = 1;
  detail::parallel_for(chunks.size(), threads, [&](size_t i) {
    const Chunk& c = chunks[i];
    const Run& run = runs[c.range];
    try {
      run_chunk(run.range, c, options);
    } catch (const Error& e) {
      const std::string label = run_label(run, ranges, c);
      if (label.empty()) throw;
      throw e.annotate(label);
    }
  }, {.what = "a reader thread"});
  return total;
}

}  // namespace ckptio::io
