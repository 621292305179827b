#include "common/raw_limits.h"

#include <fcntl.h>
#include <limits.h>  // IOV_MAX
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
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

// Writes the iovecs (consumed) at offset, batches of at most IOV_MAX, continuing short writes.
void pwritev_all(int fd, std::vector<iovec>& iov, uint64_t offset, const fs::path& path) {
  size_t first = 0;
  while (first < iov.size()) {
    const int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    const ssize_t w = ::pwritev(fd, iov.data() + first, count, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    check_sys(w > 0, "pwritev " + path.string());
    offset += static_cast<uint64_t>(w);
    for (size_t left = static_cast<size_t>(w); left > 0;) {
      const size_t n = std::min(left, iov[first].iov_len);
      iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + n;
      iov[first].iov_len -= n;
      left -= n;
      if (iov[first].iov_len == 0) ++first;
    }
    while (first < iov.size() && iov[first].iov_len == 0) ++first;
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

std::string thread_words(unsigned threads) {
  return threads == 1 ? "1 thread" : fmt::format("{} threads", threads);
}

// "best (b: 1.234 s; c: 2.000 s)".
std::string best_and_others(const VariantTimes& v) {
  std::string s = v.front().first;
  for (size_t i = 1; i < v.size(); ++i) {
    s += fmt::format("{}{}: {:.3f} s", i == 1 ? " (" : "; ", v[i].first, v[i].second);
  }
  return v.size() > 1 ? s + ")" : s;
}

// A read variant's name within its limit, where the chunk size is said once.
std::string variant_name(const ReadShape& shape) {
  const char* method = shape.mapped ? "mmap + memcpy" : "pread";
  if (shape.threads <= 1) return fmt::format("{} by 1 thread", method);
  return fmt::format("{} by {} threads, {}", method, shape.threads,
                     shape.schedule == ReadSchedule::InOrder ? "chunks in order" : "a share each");
}

VariantTimes sorted(VariantTimes v) {
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  return v;
}

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
                                bool direct, bool writeback) {
  writeback = writeback && !direct;
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
  for (unsigned t = 0; t < threads && direct; ++t) staging.push_back(aligned_buffer(chunk));
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
    auto start_writeback = [&] {
      if (writeback) ::sync_file_range(fds[jobs[j].file], static_cast<off64_t>(a),
                                       static_cast<off64_t>(b - a), SYNC_FILE_RANGE_WRITE);
    };
    if (in_one_piece && (!direct || aligned)) {
      pwrite_all(fds[jobs[j].file], src, b - a, a, l.file->path);
      start_writeback();
      return;
    }
    if (!direct) {  // the pieces straight from their memory: no copy, like ckptio's borrowed writes
      std::vector<iovec> iov;
      for (uint64_t pos = a; pos < b; ++k) {
        const auto& p = l.file->pieces[k];
        const uint64_t in_piece = pos - l.starts[k];
        const uint64_t n = std::min<uint64_t>(p.size() - in_piece, b - pos);
        if (n > 0) iov.push_back({const_cast<std::byte*>(p.data() + in_piece), static_cast<size_t>(n)});
        pos += n;
      }
      pwritev_all(fds[jobs[j].file], iov, a, l.file->path);
      start_writeback();
      return;
    }
    // O_DIRECT from unaligned memory or several pieces: gather into aligned staging.
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

WriteLimit::WriteLimit(WriteShape shape) : shape_(shape) {
  shape_.threads = std::max(1u, shape_.threads);
  for (const auto& [direct, writeback] : {std::pair{false, false}, {false, true}, {true, false}}) {
    variants_.push_back({shape_.threads, direct, writeback, {}});
    if (shape_.threads > 1) variants_.push_back({1, direct, writeback, {}});
  }
}

void WriteLimit::measure(const std::vector<RawFile>& files,
                         const std::vector<std::function<void()>>& between) {
  auto remove_all = [&] {
    for (const auto& f : files) fs::remove(f.path);
  };
  const size_t n = variants_.size();
  // between[j] runs after the variant at place (j * n / count + rounds_) % n of this round.
  std::vector<std::vector<size_t>> after(n);
  for (size_t j = 0; j < between.size(); ++j) after[(j * n / between.size() + rounds_) % n].push_back(j);
  auto run_variant = [&](Variant& v) {
    if (v.direct && direct_refused_) return;
    const std::optional<double> t =
        raw_write(files, {v.threads, shape_.chunk_bytes}, v.direct, v.writeback);
    if (!t) {
      direct_refused_ = true;
      return;
    }
    v.times.push_back(*t);
    ++runs_;
    if (!v.direct && !v.writeback && v.threads == shape_.threads) {
      unlink_.push_back(time_once(remove_all));
    } else {
      remove_all();
    }
  };
  for (size_t i = 0; i < n; ++i) {
    run_variant(variants_[(i + rounds_) % n]);
    for (size_t j : after[i]) between[j]();
  }
  ++rounds_;
}

VariantTimes WriteLimit::variants() const {
  VariantTimes out;
  for (const Variant& v : variants_) {
    if (v.times.empty()) continue;
    const char* method = v.direct ? "O_DIRECT" : v.writeback ? "buffered + early writeback" : "buffered";
    out.emplace_back(fmt::format("{} by {}", method, thread_words(v.threads)), median(v.times));
  }
  return sorted(std::move(out));
}

std::optional<double> WriteLimit::seconds() const {
  const VariantTimes v = variants();
  return v.empty() ? std::nullopt : std::optional<double>(v.front().second);
}

std::optional<double> WriteLimit::unlink_seconds() const {
  return unlink_.empty() ? std::nullopt : std::optional<double>(median(unlink_));
}

std::string WriteLimit::description() const {
  std::string s = fmt::format("pwrite + fdatasync, {} MiB chunks", shape_.chunk_bytes >> 20);
  const VariantTimes v = variants();
  if (v.empty()) return s;
  s += ", best: " + best_and_others(v);
  return direct_refused_ ? s + "; O_DIRECT refused here" : s;
}

std::string describe(const ReadShape& shape) {
  const size_t mib = shape.chunk_bytes >> 20;
  const std::string chunk = mib > 0 ? fmt::format("{} MiB", mib) : fmt::format("{} KiB", shape.chunk_bytes >> 10);
  const std::string method = shape.mapped ? "mmap + memcpy, " : "pread, ";
  if (shape.threads <= 1) return method + fmt::format("1 thread, {} chunks", chunk);
  return method + (shape.schedule == ReadSchedule::InOrder
                       ? fmt::format("{} threads x {} chunks in order", shape.threads, chunk)
                       : fmt::format("{} threads, a contiguous share each, {} chunks", shape.threads, chunk));
}

namespace {

// Where each file goes in the destination: end to end, or each at a 4 KiB boundary.
std::vector<uint64_t> file_positions(const std::vector<uint64_t>& sizes, bool page_aligned) {
  std::vector<uint64_t> at;
  uint64_t pos = 0;
  for (const uint64_t size : sizes) {
    at.push_back(pos);
    pos += page_aligned ? (size + kBlock - 1) / kBlock * kBlock : size;
  }
  return at;
}

std::vector<uint64_t> file_sizes(const std::vector<fs::path>& files) {
  std::vector<uint64_t> sizes;
  for (const auto& f : files) sizes.push_back(fs::file_size(f));
  return sizes;
}

uint64_t span_bytes(const std::vector<uint64_t>& sizes, bool page_aligned) {
  return sizes.empty() ? 0 : file_positions(sizes, page_aligned).back() + sizes.back();
}

// pread of every file into dst at `at` (one position per file); see raw_parallel_read. Shares
// and chunks are counted over the files' bytes laid end to end.
void read_files_at(const std::vector<fs::path>& files, const std::vector<uint64_t>& at,
                   std::span<std::byte> dst, const ReadShape& shape) {
  std::vector<int> fds;
  std::vector<std::span<const std::byte>> maps;  // shape.mapped: each file's mapping
  std::vector<uint64_t> starts;  // of each file in the end-to-end order
  uint64_t total = 0;
  struct CloseAll {
    std::vector<int>& fds;
    std::vector<std::span<const std::byte>>& maps;
    ~CloseAll() {
      for (const auto& m : maps) {
        if (!m.empty()) ::munmap(const_cast<std::byte*>(m.data()), m.size());
      }
      for (int fd : fds) ::close(fd);
    }
  } close_all{fds, maps};
  for (size_t f = 0; f < files.size(); ++f) {
    const int fd = ::open(files[f].c_str(), O_RDONLY | O_CLOEXEC);
    check_sys(fd >= 0, "open " + files[f].string());
    fds.push_back(fd);
    starts.push_back(total);
    const uint64_t size = fs::file_size(files[f]);
    total += size;
    if (dst.size() < at[f] + size) throw std::invalid_argument("raw read: destination too small");
    if (shape.mapped) {
      void* p = size == 0 ? nullptr : ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      check_sys(p != MAP_FAILED, "mmap " + files[f].string());
      maps.emplace_back(static_cast<const std::byte*>(p), p == nullptr ? 0 : size);
    }
  }
  const size_t chunk = std::max<size_t>(shape.chunk_bytes, kBlock);
  // Reads [pos, end) of the files laid end to end, chunk bytes per call, never across a file.
  auto read_span = [&](uint64_t pos, uint64_t end) {
    while (pos < end) {
      const size_t f = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), pos) -
                                           starts.begin()) - 1;
      const uint64_t file_end = f + 1 < starts.size() ? starts[f + 1] : total;
      const uint64_t n = std::min<uint64_t>({chunk, end - pos, file_end - pos});
      const uint64_t in_file = pos - starts[f];
      if (shape.mapped) {
        std::memcpy(dst.data() + at[f] + in_file, maps[f].data() + in_file, static_cast<size_t>(n));
      } else {
        pread_all(fds[f], dst.data() + at[f] + in_file, static_cast<size_t>(n), in_file, files[f]);
      }
      pos += n;
    }
  };
  if (shape.schedule == ReadSchedule::InOrder) {
    // Chunks cut at multiples of chunk within each file, handed out in order.
    std::vector<std::pair<uint64_t, uint64_t>> chunks;
    for (size_t f = 0; f < starts.size(); ++f) {
      const uint64_t file_end = f + 1 < starts.size() ? starts[f + 1] : total;
      for (uint64_t pos = starts[f]; pos < file_end; pos += chunk) {
        chunks.emplace_back(pos, std::min<uint64_t>(file_end, pos + chunk));
      }
    }
    run_on_threads(chunks.size(), std::max(1u, shape.threads),
                   [&](size_t i, unsigned) { read_span(chunks[i].first, chunks[i].second); });
    return;
  }
  const unsigned threads = static_cast<unsigned>(
      std::max<uint64_t>(1, std::min<uint64_t>(shape.threads, (total + chunk - 1) / chunk)));
  const uint64_t share = ((total + threads - 1) / threads + kBlock - 1) / kBlock * kBlock;
  run_on_threads(threads, threads, [&](size_t t, unsigned) {
    read_span(std::min(total, t * share), std::min(total, (t + 1) * share));
  });
}

}  // namespace

void raw_parallel_read(const std::vector<fs::path>& files, std::span<std::byte> dst,
                       const ReadShape& shape) {
  read_files_at(files, file_positions(file_sizes(files), false), dst, shape);
}

uint64_t page_aligned_bytes(const std::vector<fs::path>& files) {
  return span_bytes(file_sizes(files), true);
}

void raw_parallel_read_page_aligned(const std::vector<fs::path>& files, std::span<std::byte> dst,
                                    const ReadShape& shape) {
  read_files_at(files, file_positions(file_sizes(files), true), dst, shape);
}

double raw_read_fresh(const std::vector<fs::path>& files, const ReadShape& shape) {
  const auto start = Clock::now();
  // Each file at a page boundary of the (2 MiB aligned) buffer, so that every byte lands at the
  // same offset within a page as in its file: the kernel's copy is fastest then.
  const auto bytes = static_cast<size_t>(page_aligned_bytes(files));
  const std::shared_ptr<std::byte> buffer = io::allocate_read_buffer(bytes);
  raw_parallel_read_page_aligned(files, {buffer.get(), bytes}, shape);
  return seconds_since(start);
}

PrefaultedMemory::PrefaultedMemory(size_t bytes) : bytes_(bytes) {
  void* p = nullptr;
  if (::posix_memalign(&p, kBlock, std::max<size_t>(bytes, 1)) != 0) throw std::bad_alloc();
  data_.reset(static_cast<std::byte*>(p));
  std::memset(p, 0, bytes);  // every page faulted in
}

void PrefaultedMemory::Free::operator()(std::byte* p) const { std::free(p); }

ReadLimit::ReadLimit(ReadShape shape) {
  shape.threads = std::max(1u, shape.threads);
  const size_t chunk = shape.chunk_bytes;
  if (shape.threads > 1) {
    shapes_.push_back({shape.threads, chunk, ReadSchedule::InOrder, false});
    shapes_.push_back({shape.threads, chunk, ReadSchedule::Split, false});
  }
  shapes_.push_back({1, chunk, ReadSchedule::InOrder, false});
  if (shape.threads > 1) shapes_.push_back({shape.threads, chunk, ReadSchedule::InOrder, true});
  shapes_.push_back({1, chunk, ReadSchedule::InOrder, true});
  times_.resize(shapes_.size());
}

void ReadLimit::measure(const std::function<double(const ReadShape&)>& run) {
  const size_t n = shapes_.size();
  for (size_t i = 0; i < n; ++i) {
    const size_t k = (i + rounds_) % n;
    times_[k].push_back(run(shapes_[k]));
  }
  ++rounds_;
}

void ReadLimit::measure_fresh(const std::vector<fs::path>& files) {
  measure([&](const ReadShape& s) { return raw_read_fresh(files, s); });
}

void ReadLimit::measure_prefaulted(const std::vector<fs::path>& files) {
  const auto bytes = static_cast<size_t>(page_aligned_bytes(files));
  if (!prefaulted_ || prefaulted_->size() < bytes) prefaulted_ = std::make_unique<PrefaultedMemory>(bytes);
  const std::span<std::byte> dst(prefaulted_->data(), bytes);
  measure([&](const ReadShape& s) {
    return time_once([&] { raw_parallel_read_page_aligned(files, dst, s); });
  });
}

VariantTimes ReadLimit::variants() const {
  VariantTimes out;
  for (size_t k = 0; k < shapes_.size(); ++k) {
    if (!times_[k].empty()) out.emplace_back(variant_name(shapes_[k]), median(times_[k]));
  }
  return sorted(std::move(out));
}

std::optional<double> ReadLimit::seconds() const {
  const VariantTimes v = variants();
  return v.empty() ? std::nullopt : std::optional<double>(v.front().second);
}

std::string ReadLimit::description() const {
  const size_t chunk = shapes_.front().chunk_bytes;
  std::string s = chunk >= (size_t{1} << 20) ? fmt::format("{} MiB chunks", chunk >> 20)
                                             : fmt::format("{} KiB chunks", chunk >> 10);
  const VariantTimes v = variants();
  return v.empty() ? s : s + ", best: " + best_and_others(v);
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
  // Reads [pos, end) (block aligned); stops at the end of the file.
  auto read_span = [&](uint64_t pos, uint64_t end) {
    while (pos < end) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, end - pos));
      const ssize_t r = ::pread(fd, dst.data() + pos, n, static_cast<off_t>(pos));
      if (r < 0 && errno == EINTR) continue;
      check_sys(r >= 0, "pread " + file.string());
      if (r == 0 || pos + static_cast<uint64_t>(r) >= size) return;  // end of file
      if (static_cast<size_t>(r) % kBlock != 0) throw std::runtime_error("short O_DIRECT read");
      pos += static_cast<uint64_t>(r);
    }
  };
  if (shape.schedule == ReadSchedule::InOrder) {
    run_on_threads((padded + chunk - 1) / chunk, std::max(1u, shape.threads), [&](size_t i, unsigned) {
      read_span(i * chunk, std::min<uint64_t>(padded, (i + 1) * chunk));
    });
    return true;
  }
  const unsigned threads = static_cast<unsigned>(
      std::max<uint64_t>(1, std::min<uint64_t>(shape.threads, (padded + chunk - 1) / chunk)));
  const uint64_t share = ((padded + threads - 1) / threads + kBlock - 1) / kBlock * kBlock;
  run_on_threads(threads, threads, [&](size_t t, unsigned) {
    read_span(std::min(padded, t * share), std::min(padded, (t + 1) * share));
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

namespace {
constexpr size_t kCopyAlignment = 64;  // = kStagingAlignment (src/checkpoint/staging_pool.h)
size_t copy_aligned(size_t n) { return (n + kCopyAlignment - 1) / kCopyAlignment * kCopyAlignment; }
}  // namespace

size_t parallel_memcpy_bytes(const std::vector<std::span<const std::byte>>& sources) {
  size_t total = 0;
  for (const auto& s : sources) total += copy_aligned(s.size());
  return total;
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
    dst += copy_aligned(s.size());
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
