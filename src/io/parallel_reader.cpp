// read_parallel: the requests are laid end to end as one byte stream, the stream is cut into one
// contiguous share per thread (balanced by bytes, like the Run:ai streamer's assigner), and each
// thread preads its share chunk by chunk straight into the destinations.
#include "ckptio/parallel_reader.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "ckptio/error.h"

namespace ckptio::io {
namespace {

struct Stream {
  std::span<const ReadRequest> requests;
  std::vector<uint64_t> starts;  // stream position where each request begins
  uint64_t total = 0;
};

class FirstError {
 public:
  void set(std::exception_ptr e) {
    std::lock_guard lock(mu_);
    if (!error_) error_ = std::move(e);
    failed_.store(true, std::memory_order_relaxed);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void rethrow() {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

// Reads stream bytes [begin, end) in pieces of at most `chunk`.
void read_share(const Stream& s, uint64_t begin, uint64_t end, size_t chunk, FirstError& err) {
  try {
    size_t r = static_cast<size_t>(std::upper_bound(s.starts.begin(), s.starts.end(), begin) -
                                   s.starts.begin()) - 1;
    uint64_t pos = begin;
    while (pos < end && !err.failed()) {
      const ReadRequest& req = s.requests[r];
      const uint64_t in_req = pos - s.starts[r];
      const uint64_t req_left = req.dst.size() - in_req;
      if (req_left == 0) {
        ++r;
        continue;
      }
      const auto n = static_cast<size_t>(std::min<uint64_t>({req_left, end - pos, chunk}));
      req.file->read_exact(req.offset + in_req, req.dst.subspan(static_cast<size_t>(in_req), n));
      pos += n;
    }
  } catch (...) {
    err.set(std::current_exception());
  }
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

void read_parallel(std::span<const ReadRequest> requests, const ParallelReadOptions& options) {
  Stream s;
  s.requests = requests;
  s.starts.reserve(requests.size());
  for (const ReadRequest& r : requests) {
    if (r.file == nullptr && !r.dst.empty()) {
      throw Error(ErrorCode::InvalidArgument, "read_parallel: request without a file");
    }
    s.starts.push_back(s.total);
    s.total += r.dst.size();
  }
  if (s.total == 0) return;
  const size_t chunk = std::max<size_t>(options.chunk_bytes == 0 ? kMaxIoChunk : options.chunk_bytes,
                                        4096);
  unsigned threads = options.threads;
  if (threads == 0) threads = std::min(16u, std::max(1u, std::thread::hardware_concurrency() * 2));
  // Never more threads than chunks: each gets at least one whole chunk of work.
  threads = static_cast<unsigned>(std::min<uint64_t>(threads, (s.total + chunk - 1) / chunk));
  if (s.total < options.min_parallel_bytes) threads = 1;

  FirstError err;
  if (threads <= 1) {
    read_share(s, 0, s.total, chunk, err);
    err.rethrow();
    return;
  }
  // Shares end on 64 KiB stream boundaries so neighbouring threads rarely touch the same page.
  constexpr uint64_t kGrain = 64 * 1024;
  const uint64_t share = ((s.total + threads - 1) / threads + kGrain - 1) / kGrain * kGrain;
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  uint64_t next = share;  // share 0 runs on the calling thread
  while (next < s.total) {
    const uint64_t b = next, e = std::min(s.total, next + share);
    try {
      pool.emplace_back([&s, b, e, chunk, &err] { read_share(s, b, e, chunk, err); });
    } catch (...) {
      // Could not start a thread: read this share here instead.
      read_share(s, b, e, chunk, err);
    }
    next = e;
  }
  read_share(s, 0, std::min(share, s.total), chunk, err);
  for (std::thread& t : pool) t.join();
  err.rethrow();
}

}  // namespace ckptio::io
