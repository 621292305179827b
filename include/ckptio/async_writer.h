// AsyncWriter: many producers hand over (file, offset, bytes) writes; background threads write
// them and synchronize() makes them durable or throws. It is TensorNVMe's AsyncFileWriter done
// right: every result is checked, short writes continue, no call moves more than Linux accepts,
// memory in flight is bounded, and no error is ever dropped.
//
// Backends: `pwrite` (default: a pool of threads doing positional writes through the Env) and
// `io_uring` (liburing, probed at run time; when the kernel, a seccomp filter or the build does
// not allow it the writer falls back to pwrite and says so in backend()). With direct_io the
// block-aligned middle of each write goes through an O_DIRECT file the Env opens (straight from
// the caller's memory when it is aligned, else from an aligned staging buffer) and the unaligned
// head and tail through the ordinary file.
//
// Every backend stays inside the Env: io_uring submits on the descriptor of the Env's file and
// asks the file before each attempt and tells it each completion (WritableFile::plan_write,
// write_completed), and O_DIRECT writes go through the Env's open_write_direct() file, so the
// fault-injecting and power-cut Envs reach them without a copy and without a detour.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "ckptio/error.h"
#include "ckptio/io.h"

namespace ckptio::io {

enum class WriteBackend : uint8_t {
  Pwrite,   // thread pool of pwrite through the Env
  IoUring,  // one io_uring per thread, several writes in flight each
};

// "pwrite" / "io_uring".
std::string_view write_backend_name(WriteBackend backend);
// Whether io_uring can be used in this process (built with liburing, and the kernel lets us set
// up a ring and write with it). Probed once, cached.
bool io_uring_available();

struct AsyncWriterOptions {
  WriteBackend backend = WriteBackend::Pwrite;
  // Background threads; 0: ckptio::default_threads().
  unsigned threads = 0;
  // Writes are split into pieces of at most this many bytes (rounded to 4 KiB) so that threads
  // share a large write and backpressure is fine-grained.
  size_t chunk_bytes = size_t{8} << 20;
  // Bound on bytes submitted but not yet written. submit() blocks while the bound would be
  // exceeded; staged copies (submit_copy) therefore never hold more memory than this. Values
  // below chunk_bytes lower the chunk size to match.
  uint64_t max_bytes_in_flight = uint64_t{256} << 20;
  // O_DIRECT for block-aligned parts (files opened or attached while this is set).
  bool direct_io = false;
  // Submission queue depth per io_uring thread.
  unsigned uring_depth = 16;
  // synchronize() fsyncs every file written since the last synchronize(). Off only for
  // benchmarks of the page cache and for callers that fsync themselves.
  bool sync = true;
  // Starts the disk's writeback of each buffered write as soon as it is written
  // (WritableFile::start_writeback), so the disk works while later bytes are still being copied
  // and the final fsync has little left to wait for. Without it the kernel starts only past its
  // dirty-page threshold (10% of memory by default: more than a whole checkpoint on most
  // machines), and a durable write takes the copy time plus the disk time instead of the longer
  // of the two (2 GiB, one file, one thread: 2.6-2.9 s without, 0.95-1.1 s with, where O_DIRECT
  // took 1.0-1.2 s). nullopt: on exactly when `sync` is; set it for files the caller fsyncs
  // itself, and leave it off for data that need not reach the disk soon.
  std::optional<bool> early_writeback;
  // nullptr: Env::posix().
  Env* env = nullptr;
  // Called by the destructor for an error no caller collected; default prints to stderr.
  std::function<void(const Error&)> on_uncollected_error;
};

class AsyncWriter {
 public:
  using FileId = uint32_t;

  explicit AsyncWriter(AsyncWriterOptions options = {});
  // Waits for every submitted write, joins the threads, closes owned files. An error that
  // neither submit() nor synchronize() has thrown is passed to on_uncollected_error. Does not
  // fsync: durability is what synchronize() is for.
  ~AsyncWriter();
  AsyncWriter(const AsyncWriter&) = delete;
  AsyncWriter& operator=(const AsyncWriter&) = delete;

  // The backend actually in use (Pwrite when io_uring was asked for but is unavailable).
  WriteBackend backend() const;
  const AsyncWriterOptions& options() const;

  // Opens `path` through the Env; the writer owns the file until close() or destruction.
  FileId open(const fs::path& path, OpenMode mode);
  // Writes into a file the caller owns; it must stay open until synchronize() has returned (or
  // the writer is destroyed).
  FileId attach(WritableFile& file);

  // Queues a write of `bytes` at `offset`. The bytes are borrowed: they must stay alive and
  // unchanged until synchronize() returns. Blocks while the in-flight bound is reached. Thread-
  // safe. Throws the pending error (as synchronize() would) if an earlier write failed, so
  // producers stop early. `what` names the bytes in error messages (e.g. `tensor "w"`); it is
  // borrowed like the bytes.
  void submit(FileId file, uint64_t offset, std::span<const std::byte> bytes,
              std::string_view what = {});
  // Like submit, but copies the bytes into staging memory first (counted in the bound), so the
  // caller may reuse its buffer as soon as this returns.
  void submit_copy(FileId file, uint64_t offset, std::span<const std::byte> bytes,
                   std::string_view what = {});

  // Waits for everything submitted so far, fsyncs every file written since the last call (when
  // options.sync), then throws the first error of that period, naming file and byte offset. The
  // writer is usable again afterwards. An error that submit() already threw is thrown here
  // again: the failed period ends only here. Call from one thread at a time.
  void synchronize();
  // synchronize(), then closes an owned file (reporting a failed close). Attached files are
  // only forgotten.
  void close(FileId file);

  // Whether the file got an O_DIRECT descriptor (direct_io asked for and supported here).
  bool uses_direct_io(FileId file) const;

  // Bytes submitted and not yet written, and the most there ever were at once.
  uint64_t bytes_in_flight() const;
  uint64_t peak_bytes_in_flight() const;
  // Bytes written since construction (counted only after the write returned success).
  uint64_t bytes_written() const;
  // The same, by the path that moved them: which engine really ran (a file without a descriptor
  // makes io_uring write through the Env; O_DIRECT needs a filesystem that has it).
  struct WrittenBy {
    uint64_t env_writes = 0;  // WritableFile::write_at of the Env's file (pwrite, head/tail)
    uint64_t io_uring = 0;    // submitted on the file's descriptor through a ring
    uint64_t direct_io = 0;   // through the O_DIRECT companion file
  };
  WrittenBy bytes_written_by() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ckptio::io
