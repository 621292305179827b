#include "common/raw_limits.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/core.h>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/threads.h"
#include "common/timing.h"

namespace ckptio::bench {
namespace {

constexpr size_t kBlock = 4096;

void check_sys(bool ok, const std::string& what) {
  if (!ok) throw system_error(errno, what);
}

// Runs fn(i) for i in [0, n) on `threads` threads pulling indices in order; rethrows the first
// failure after joining.
template <class F>
void run_on_threads(size_t n, unsigned threads, F&& fn) {
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex mu;
  auto worker = [&](unsigned t) {
    try {
      for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, t);
    } catch (...) {
      std::lock_guard lock(mu);
      if (!error) error = std::current_exception();
      next.store(n);
    }
  };
  threads = static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(threads, n)));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

struct AlignedFree {
  void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte, AlignedFree>;

AlignedBuffer aligned_buffer(size_t bytes) {
  void* p = nullptr;
  if (::posix_memalign(&p, kBlock, bytes) != 0) throw std::bad_alloc();
  std::memset(p, 0, bytes);  // faulted in before any clock starts
  return AlignedBuffer(static_cast<std::byte*>(p));
}

void pwrite_all(int fd, const std::byte* p, size_t n, uint64_t offset, const fs::path& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    check_sys(w > 0, "pwrite " + path.string());
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void pread_all(int fd, std::byte* p, size_t n, uint64_t offset, const fs::path& path) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    check_sys(r > 0, "pread " + path.string());
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  check_sys(fd >= 0, "open " + dir.string());
  check_sys(::fsync(fd) == 0, "fsync " + dir.string());
  ::close(fd);
}

// Where each piece of a file starts, for finding the pieces of a chunk.
struct Layout {
  const RawFile* file;
  std::vector<uint64_t> starts;
  uint64_t size = 0;
};

}  // namespace

unsigned async_writer_threads() {
  const unsigned t = io::AsyncWriterOptions{}.threads;
  return t != 0 ? t : default_threads();
}
size_t async_writer_chunk_bytes() { return io::AsyncWriterOptions{}.chunk_bytes; }

unsigned parallel_reader_threads() {
  const io::ParallelReadOptions o;
  if (o.threads != 0) return o.threads;
  return default_threads();
}
size_t parallel_reader_chunk_bytes() { return io::ParallelReadOptions{}.chunk_bytes; }

unsigned default_worker_threads() { return default_threads(); }

uint64_t RawFile::size() const {
  uint64_t n = 0;
  for (const auto& p : pieces) n += p.size();
  return n;
}

WriteShape async_writer_shape() { return {async_writer_threads(), async_writer_chunk_bytes()}; }

std::optional<double> raw_write(const std::vector<RawFile>& files, const WriteShape& shape,
                                bool direct) {
  const size_t chunk = std::max(kBlock, shape.chunk_bytes / kBlock * kBlock);
  std::vector<Layout> layouts;
  struct Job {
    size_t file;
    uint64_t offset;
  };
  std::vector<Job> jobs;
  for (size_t f = 0; f < files.size(); ++f) {
    Layout l{&files[f], {}, 0};
    for (const auto& p : files[f].pieces) {
      l.starts.push_back(l.size);
      l.size += p.size();
    }
    for (uint64_t off = 0; off < l.size; off += chunk) jobs.push_back({f, off});
    layouts.push_back(std::move(l));
  }
  const unsigned threads = std::max(1u, shape.threads);
  std::vector<AlignedBuffer> staging;
  for (unsigned t = 0; t < threads; ++t) staging.push_back(aligned_buffer(chunk));
  for (const auto& f : files) fs::remove(f.path);

  const auto start = Clock::now();
  std::vector<int> fds;
  struct CloseAll {
    std::vector<int>& fds;
    ~CloseAll() {
      for (int fd : fds) ::close(fd);
    }
  } close_all{fds};
  for (const auto& f : files) {
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (direct ? O_DIRECT : 0);
    const int fd = ::open(f.path.c_str(), flags, 0644);
    if (fd < 0 && direct && errno == EINVAL) {
      for (const auto& g : files) fs::remove(g.path);
      return std::nullopt;  // the filesystem does not do O_DIRECT (tmpfs)
    }
    check_sys(fd >= 0, "open " + f.path.string());
    fds.push_back(fd);
  }
  run_on_threads(jobs.size(), threads, [&](size_t j, unsigned t) {
    const Layout& l = layouts[jobs[j].file];
    const uint64_t a = jobs[j].offset;
    const uint64_t b = std::min(l.size, a + chunk);
    size_t k = static_cast<size_t>(std::upper_bound(l.starts.begin(), l.starts.end(), a) -
                                   l.starts.begin()) - 1;
    const auto& piece = l.file->pieces[k];
    const std::byte* src = piece.data() + (a - l.starts[k]);
    const bool in_one_piece = b - l.starts[k] <= piece.size();
    const bool aligned = reinterpret_cast<uintptr_t>(src) % kBlock == 0 && (b - a) % kBlock == 0;
    if (in_one_piece && (!direct || aligned)) {
      pwrite_all(fds[jobs[j].file], src, b - a, a, l.file->path);
      return;
    }
    // Gather the chunk (small pieces, or unaligned memory for O_DIRECT) into aligned staging.
    std::byte* out = staging[t].get();
    uint64_t pos = a;
    while (pos < b) {
      const auto& p = l.file->pieces[k];
      const uint64_t in_piece = pos - l.starts[k];
      const uint64_t n = std::min<uint64_t>(p.size() - in_piece, b - pos);
      std::memcpy(out + (pos - a), p.data() + in_piece, n);
      pos += n;
      ++k;
    }
    size_t len = b - a;
    if (direct && len % kBlock != 0) {  // the file's last block: padded, truncated below
      const size_t padded = (len + kBlock - 1) / kBlock * kBlock;
      std::memset(out + len, 0, padded - len);
      len = padded;
    }
    pwrite_all(fds[jobs[j].file], out, len, a, l.file->path);
  });
  run_on_threads(files.size(), threads, [&](size_t f, unsigned) {
    if (direct && layouts[f].size % kBlock != 0) {
      check_sys(::ftruncate(fds[f], static_cast<off_t>(layouts[f].size)) == 0,
                "ftruncate " + files[f].path.string());
    }
    check_sys(::fdatasync(fds[f]) == 0, "fdatasync " + files[f].path.string());
  });
  for (int fd : fds) ::close(fd);
  fds.clear();
  std::set<fs::path> dirs;
  for (const auto& f : files) dirs.insert(f.path.parent_path());
  for (const auto& d : dirs) fsync_dir(d);
  return seconds_since(start);
}

void WriteLimit::measure(const std::vector<RawFile>& files) {
  auto remove_all = [&] {
    for (const auto& f : files) fs::remove(f.path);
  };
  buffered_.push_back(*raw_write(files, shape_, false));
  unlink_.push_back(time_once(remove_all));
  if (direct_refused_) return;
  if (const auto d = raw_write(files, shape_, true)) {
    direct_.push_back(*d);
  } else {
    direct_refused_ = true;
  }
  remove_all();
}

std::optional<double> WriteLimit::seconds() const {
  if (buffered_.empty()) return std::nullopt;
  const double b = median(buffered_);
  return direct_.empty() ? b : std::min(b, median(direct_));
}

std::optional<double> WriteLimit::unlink_seconds() const {
  return unlink_.empty() ? std::nullopt : std::optional<double>(median(unlink_));
}

std::string WriteLimit::description() const {
  std::string s = fmt::format("parallel pwrite + fdatasync, {} threads x {} MiB chunks", shape_.threads,
                              shape_.chunk_bytes >> 20);
  if (buffered_.empty()) return s;
  const double b = median(buffered_);
  if (direct_.empty()) {
    return s + (direct_refused_ ? ", buffered (O_DIRECT refused here)" : ", buffered");
  }
  const double d = median(direct_);
  return d < b ? s + fmt::format(", O_DIRECT (buffered: {:.3f} s)", b)
               : s + fmt::format(", buffered (O_DIRECT: {:.3f} s)", d);
}

void raw_parallel_read(const std::vector<fs::path>& files, std::span<std::byte> dst,
                       const ReadShape& shape) {
  std::vector<int> fds;
  std::vector<uint64_t> starts;
  uint64_t total = 0;
  struct CloseAll {
    std::vector<int>& fds;
    ~CloseAll() {
      for (int fd : fds) ::close(fd);
    }
  } close_all{fds};
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    check_sys(fd >= 0, "open " + f.string());
    fds.push_back(fd);
    starts.push_back(total);
    total += fs::file_size(f);
  }
  if (dst.size() < total) throw std::invalid_argument("raw_parallel_read: destination too small");
  const size_t chunk = std::max<size_t>(shape.chunk_bytes, kBlock);
  const unsigned threads = static_cast<unsigned>(
      std::max<uint64_t>(1, std::min<uint64_t>(shape.threads, (total + chunk - 1) / chunk)));
  const uint64_t share = ((total + threads - 1) / threads + kBlock - 1) / kBlock * kBlock;
  run_on_threads(threads, threads, [&](size_t t, unsigned) {
    uint64_t pos = t * share;
    const uint64_t end = std::min(total, pos + share);
    while (pos < end) {
      const size_t f = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), pos) -
                                           starts.begin()) - 1;
      const uint64_t file_end = f + 1 < starts.size() ? starts[f + 1] : total;
      const uint64_t n = std::min<uint64_t>({chunk, end - pos, file_end - pos});
      pread_all(fds[f], dst.data() + pos, static_cast<size_t>(n), pos - starts[f], files[f]);
      pos += n;
    }
  });
}

double raw_read_fresh(const std::vector<fs::path>& files, const ReadShape& shape) {
  uint64_t total = 0;
  for (const auto& f : files) total += fs::file_size(f);
  const auto start = Clock::now();
  const std::shared_ptr<std::byte> buffer = io::allocate_read_buffer(total);
  raw_parallel_read(files, {buffer.get(), static_cast<size_t>(total)}, shape);
  return seconds_since(start);
}

bool raw_direct_read(const fs::path& file, std::span<std::byte> dst, const ReadShape& shape) {
  const uint64_t size = fs::file_size(file);
  const uint64_t padded = (size + kBlock - 1) / kBlock * kBlock;
  if (dst.size() < padded || reinterpret_cast<uintptr_t>(dst.data()) % kBlock != 0) {
    throw std::invalid_argument("raw_direct_read: destination not aligned or too small");
  }
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd < 0 && errno == EINVAL) return false;
  check_sys(fd >= 0, "open " + file.string());
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_fd{fd};
  const size_t chunk = std::max<size_t>(shape.chunk_bytes / kBlock * kBlock, kBlock);
  const unsigned threads = static_cast<unsigned>(
      std::max<uint64_t>(1, std::min<uint64_t>(shape.threads, (padded + chunk - 1) / chunk)));
  const uint64_t share = ((padded + threads - 1) / threads + kBlock - 1) / kBlock * kBlock;
  run_on_threads(threads, threads, [&](size_t t, unsigned) {
    const uint64_t end = std::min(padded, (t + 1) * share);
    for (uint64_t pos = t * share; pos < end;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, end - pos));
      const ssize_t r = ::pread(fd, dst.data() + pos, n, static_cast<off_t>(pos));
      if (r < 0 && errno == EINTR) continue;
      check_sys(r >= 0, "pread " + file.string());
      if (r == 0 || pos + static_cast<uint64_t>(r) >= size) break;  // end of file
      if (static_cast<size_t>(r) % kBlock != 0) throw std::runtime_error("short O_DIRECT read");
      pos += static_cast<uint64_t>(r);
    }
  });
  return true;
}

std::optional<double> raw_read_fresh_direct(const fs::path& file, const ReadShape& shape) {
  const uint64_t padded = (fs::file_size(file) + kBlock - 1) / kBlock * kBlock;
  const auto start = Clock::now();
  const std::shared_ptr<std::byte> buffer = io::allocate_read_buffer(padded);
  if (reinterpret_cast<uintptr_t>(buffer.get()) % kBlock != 0) return std::nullopt;  // heap fallback
  if (!raw_direct_read(file, {buffer.get(), static_cast<size_t>(padded)}, shape)) return std::nullopt;
  return seconds_since(start);
}

void parallel_memcpy(const std::vector<std::span<const std::byte>>& sources, std::byte* dst,
                     unsigned threads, size_t chunk_bytes) {
  struct Piece {
    const std::byte* src;
    std::byte* dst;
    size_t n;
  };
  std::vector<Piece> pieces;
  const size_t chunk = std::max<size_t>(chunk_bytes, 1);
  for (const auto& s : sources) {
    for (size_t off = 0; off < s.size(); off += chunk) {
      pieces.push_back({s.data() + off, dst + off, std::min(chunk, s.size() - off)});
    }
    dst += s.size();
  }
  run_on_threads(pieces.size(), threads,
                 [&](size_t i, unsigned) { std::memcpy(pieces[i].dst, pieces[i].src, pieces[i].n); });
}

bool drop_caches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  if (!f) return false;
  f << "3\n";
  f.flush();
  return static_cast<bool>(f);
}

}  // namespace ckptio::bench
