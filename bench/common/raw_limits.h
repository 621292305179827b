// The physical limits the benchmarks compare ckptio against: the best raw method for the same
// bytes, measured in the same run. "Best" means what ckptio itself could at most do on this
// machine with the same resources, so that a ratio above 1 means the limit is wrong:
//   - writes: parallel pwrite by as many threads, in chunks as large, as io::AsyncWriter uses by
//     default, both buffered and O_DIRECT (from 4 KiB aligned memory), each followed by
//     fdatasync of every file and fsync of the folder; the faster of the two is the limit;
//   - reads: parallel pread by as many threads as the ckptio path under test uses, in the same
//     chunk size, into the same kind of memory (fresh io::allocate_read_buffer memory, or the
//     caller's pre-faulted buffers); with a cold page cache, also O_DIRECT (the faster counts);
//   - copies: memcpy split over as many threads as CheckpointIO's staging copy uses.
// Everything here is plain system calls; no ckptio code path is timed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
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

// Writes every file anew (parallel pwrite of chunk-sized pieces in file order, fdatasync of each
// file, fsync of each folder) and returns the seconds that took; the files stay. direct: through
// O_DIRECT with a 4 KiB aligned staging buffer per thread (pieces that are aligned go straight
// from their own memory); nullopt when the filesystem refuses O_DIRECT.
std::optional<double> raw_write(const std::vector<RawFile>& files, const WriteShape& shape,
                                bool direct);

// The write limit, measured one repetition at a time so that callers can interleave it with the
// measurement it bounds (a virtual disk drifts over a run).
class WriteLimit {
 public:
  explicit WriteLimit(WriteShape shape = async_writer_shape()) : shape_(shape) {}
  // One buffered and one O_DIRECT run, each file removed after each run (the buffered run's
  // removal is timed: dropping the files' cached pages is the kernel's cost, paid by whatever
  // deletes them).
  void measure(const std::vector<RawFile>& files);
  // Median of the faster method; nullopt before measure().
  std::optional<double> seconds() const;
  // Median time to remove the files after the buffered write.
  std::optional<double> unlink_seconds() const;
  // "parallel pwrite + fsync, 4 threads x 8 MiB, O_DIRECT (buffered 1.23 s)".
  std::string description() const;

 private:
  WriteShape shape_;
  std::vector<double> buffered_, direct_, unlink_;
  bool direct_refused_ = false;
};

struct ReadShape {
  unsigned threads = 1;
  size_t chunk_bytes = size_t{8} << 20;
};

// pread of the files' whole contents, laid end to end, into dst (at least their total size):
// one contiguous share per thread, chunk_bytes per call. Files are opened inside (timed by the
// caller).
void raw_parallel_read(const std::vector<fs::path>& files, std::span<std::byte> dst,
                       const ReadShape& shape);

// raw_parallel_read into a fresh io::allocate_read_buffer (the memory ckptio loads into),
// allocated inside the clock like a load's. Returns seconds.
double raw_read_fresh(const std::vector<fs::path>& files, const ReadShape& shape);

// One file read with O_DIRECT (past the page cache, which pays off when it is cold) into dst,
// which must be 4 KiB aligned and hold the size rounded up to 4 KiB. False when the filesystem
// refuses O_DIRECT.
bool raw_direct_read(const fs::path& file, std::span<std::byte> dst, const ReadShape& shape);
// raw_direct_read into a fresh io::allocate_read_buffer, timed like raw_read_fresh; nullopt when
// O_DIRECT is refused.
std::optional<double> raw_read_fresh_direct(const fs::path& file, const ReadShape& shape);

// memcpy of the sources, laid end to end, into dst: chunk_bytes pieces pulled in order by
// `threads` threads (the shape of CheckpointIO's staging copy).
void parallel_memcpy(const std::vector<std::span<const std::byte>>& sources, std::byte* dst,
                     unsigned threads, size_t chunk_bytes = size_t{8} << 20);

// sync, then drop the page cache (root only). False when not allowed.
bool drop_caches();

}  // namespace ckptio::bench
