// The physical limits the benchmarks compare ckptio against: the best raw method for the same
// bytes, measured in the same run. "Best" means what ckptio itself could at most do on this
// machine with the same resources, so that a ratio above 1 means the limit is wrong. Each limit
// measures several raw variants, one run of each per round (in a rotating order, so that none
// always follows the same neighbour), and the fastest variant's median is the limit:
//   - writes: pwrite of the same bytes (pwritev straight from their memory when buffered; an
//     aligned staging copy only where O_DIRECT needs one), buffered and O_DIRECT, each by one
//     thread and by as many threads as io::AsyncWriter uses by default, in its chunk size, each
//     followed by fdatasync of every file and fsync of the folder;
//   - reads: pread of the same files into the same kind of memory as the ckptio path under test
//     (fresh io::allocate_read_buffer memory, or pre-faulted memory like a caller's buffers), each
//     file at a page boundary, by its thread count with chunks handed out in order (like
//     io::read_parallel) and with one contiguous share per thread, and by one thread; with a cold
//     page cache, also O_DIRECT (the faster counts);
//   - copies: memcpy split over as many threads as CheckpointIO's staging copy uses.
// Everything here is plain system calls; no ckptio code path is timed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace ckptio::bench {

namespace fs = std::filesystem;

// Thread counts and chunk sizes of ckptio's own defaults, so that the limits use the same.
unsigned async_writer_threads();        // io::AsyncWriterOptions{}.threads
size_t async_writer_chunk_bytes();      // io::AsyncWriterOptions{}.chunk_bytes
unsigned parallel_reader_threads();     // io::ParallelReadOptions{} with threads = 0
size_t parallel_reader_chunk_bytes();   // io::ParallelReadOptions{}.chunk_bytes
unsigned default_worker_threads();  // ckptio::default_threads(): what `threads = 0` means

// One file of a raw write: its content as pieces laid end to end.
struct RawFile {
  fs::path path;
  std::vector<std::span<const std::byte>> pieces;
  uint64_t size() const;
};

struct WriteShape {
  unsigned threads = 4;
  size_t chunk_bytes = size_t{8} << 20;
};
WriteShape async_writer_shape();

// Writes every file anew (chunk-sized writes handed out in file order to shape.threads threads,
// fdatasync of each file, fsync of each folder) and returns the seconds that took; the files
// stay. Buffered: one pwritev per chunk straight from the pieces' memory (no copy). direct:
// through O_DIRECT with a 4 KiB aligned staging buffer per thread (pieces that are aligned go
// straight from their own memory); nullopt when the filesystem refuses O_DIRECT. writeback
// (buffered only): sync_file_range(SYNC_FILE_RANGE_WRITE) after each chunk, so the disk writes
// while later chunks are copied instead of all at the fdatasync.
std::optional<double> raw_write(const std::vector<RawFile>& files, const WriteShape& shape,
                                bool direct, bool writeback = false);

// The median seconds of each variant a limit measured, by name ("O_DIRECT by 1 thread",
// "2 threads, chunks in order"), fastest first.
using VariantTimes = std::vector<std::pair<std::string, double>>;

// The write limit, measured one round at a time so that callers can interleave it with the
// measurement it bounds (a virtual disk drifts over a run). Variants: buffered, buffered with
// early writeback and O_DIRECT, each with shape.threads threads and with one (ckptio's
// single-file save writes with one writer thread, and on some disks one stream is faster than
// two).
class WriteLimit {
 public:
  explicit WriteLimit(WriteShape shape = async_writer_shape());
  // One run of every variant, the files removed after each run (untimed, except after the
  // buffered run at shape.threads: dropping the files' cached pages is the kernel's cost, paid by
  // whatever deletes them, reported as unlink_seconds). `between`: the measurements this limit
  // bounds (one ckptio save each), run once each between the variants' runs, spread over the
  // round and shifted by one place every round, so that each of them, like each variant, follows
  // a single write, not a block of them (on a virtual disk a write after several in a row ran up
  // to 20% slower than the same write after one).
  void measure(const std::vector<RawFile>& files,
               const std::vector<std::function<void()>>& between = {});
  // Median of the fastest variant; nullopt before measure().
  std::optional<double> seconds() const;
  VariantTimes variants() const;
  // Raw writes run so far, every variant and round together.
  size_t runs() const { return runs_; }
  // Median time to remove the files after the buffered write.
  std::optional<double> unlink_seconds() const;
  // "pwrite + fdatasync, 8 MiB chunks, best: O_DIRECT by 1 thread (buffered by 2 threads:
  // 0.390 s; ...)".
  std::string description() const;

 private:
  struct Variant {
    unsigned threads;
    bool direct;
    bool writeback;  // buffered, with the writeback of each chunk started behind it
    std::vector<double> times;
  };
  WriteShape shape_;
  std::vector<Variant> variants_;
  std::vector<double> unlink_;
  bool direct_refused_ = false;
  size_t rounds_ = 0;
  size_t runs_ = 0;
};

// How the chunks of a parallel read are shared among its threads.
enum class ReadSchedule : uint8_t {
  InOrder,  // chunks handed out in file order as threads come free (io::read_parallel's way)
  Split,    // one contiguous share per thread
};

struct ReadShape {
  unsigned threads = 1;
  size_t chunk_bytes = size_t{8} << 20;
  ReadSchedule schedule = ReadSchedule::InOrder;
  // Instead of pread: map each file (read-only) and memcpy out of the mapping (what a load
  // through ReadMode::Mmap does; the mapping and unmapping are timed too).
  bool mapped = false;
};

// "pread, 2 threads x 8 MiB chunks in order", "mmap + memcpy, 1 thread, 8 MiB chunks".
std::string describe(const ReadShape& shape);

// pread of the files' whole contents, laid end to end, into dst (at least their total size),
// chunk_bytes per call, shared among threads as shape.schedule says. Files are opened inside
// (timed by the caller).
void raw_parallel_read(const std::vector<fs::path>& files, std::span<std::byte> dst,
                       const ReadShape& shape);

// Like raw_parallel_read, but each file starts at a 4 KiB boundary of dst, which must be 4 KiB
// aligned and page_aligned_bytes(files) long: every byte then lands at the same offset within a
// page as in its file, where the kernel's copy is fastest. A destination a few bytes ahead of
// its source within a page (malloc's 16-byte header over a page-aligned file offset) makes that
// copy 2-4x slower on some CPUs (measured on an AMD EPYC), most other offsets up to 1.3x; the limits read
// this way.
uint64_t page_aligned_bytes(const std::vector<fs::path>& files);
void raw_parallel_read_page_aligned(const std::vector<fs::path>& files, std::span<std::byte> dst,
                                    const ReadShape& shape);

// pread of the files into a fresh io::allocate_read_buffer (the memory ckptio loads into),
// allocated inside the clock like a load's, each file at a page boundary
// (raw_parallel_read_page_aligned). Returns seconds.
double raw_read_fresh(const std::vector<fs::path>& files, const ReadShape& shape);

// Page-aligned memory, every page touched once (like buffers a caller allocated and filled
// before a load into them).
class PrefaultedMemory {
 public:
  explicit PrefaultedMemory(size_t bytes);
  std::byte* data() const { return data_.get(); }
  size_t size() const { return bytes_; }

 private:
  struct Free {
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte, Free> data_;
  size_t bytes_;
};

// The read limit of a warm page cache, measured one round at a time like WriteLimit. Variants:
// pread by shape.threads threads with chunks in order and with a share each, and by one thread;
// mmap + memcpy by shape.threads threads (chunks in order) and by one; all in shape.chunk_bytes
// pieces.
class ReadLimit {
 public:
  explicit ReadLimit(ReadShape shape);
  // One run of every variant into fresh io::allocate_read_buffer memory (allocated inside the
  // clock, like a load's).
  void measure_fresh(const std::vector<fs::path>& files);
  // One run of every variant into pre-faulted memory (PrefaultedMemory, kept between rounds),
  // each file at a page boundary (raw_parallel_read_page_aligned), whatever the placement of the
  // buffers the measured load fills.
  void measure_prefaulted(const std::vector<fs::path>& files);
  std::optional<double> seconds() const;
  VariantTimes variants() const;
  // "8 MiB chunks, best: pread by 2 threads, chunks in order (mmap + memcpy by 1 thread:
  // 0.030 s; ...)".
  std::string description() const;

 private:
  void measure(const std::function<double(const ReadShape&)>& run);
  std::vector<ReadShape> shapes_;
  std::vector<std::vector<double>> times_;
  size_t rounds_ = 0;
  std::unique_ptr<PrefaultedMemory> prefaulted_;
};

// One file read with O_DIRECT (past the page cache, which pays off when it is cold) into dst,
// which must be 4 KiB aligned and hold the size rounded up to 4 KiB. False when the filesystem
// refuses O_DIRECT.
bool raw_direct_read(const fs::path& file, std::span<std::byte> dst, const ReadShape& shape);
// raw_direct_read into a fresh io::allocate_read_buffer, timed like raw_read_fresh; nullopt when
// O_DIRECT is refused.
std::optional<double> raw_read_fresh_direct(const fs::path& file, const ReadShape& shape);

// memcpy of the sources into dst, each at the next 64-byte boundary after the one before (the
// staging pool's layout: kStagingAlignment; packed end to end, sources of odd sizes leave the
// destination out of phase with the source and the copy slower than ckptio's): chunk_bytes pieces
// pulled in order by `threads` threads (the shape of CheckpointIO's staging copy).
// parallel_memcpy_bytes: the size dst needs.
size_t parallel_memcpy_bytes(const std::vector<std::span<const std::byte>>& sources);
void parallel_memcpy(const std::vector<std::span<const std::byte>>& sources, std::byte* dst,
                     unsigned threads, size_t chunk_bytes = size_t{8} << 20);

// sync, then drop the page cache (root only). False when not allowed.
bool drop_caches();

}  // namespace ckptio::bench
