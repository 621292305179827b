// AsyncWriter: a queue of chunks, worker threads that write them, and one error slot that is
// never dropped. Chunks are cut at file offsets that are multiples of the chunk size, so that for
// O_DIRECT only the first and last block of each submitted write are unaligned.
#include "ckptio/async_writer.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#ifdef CKPTIO_HAVE_LIBURING
#include <liburing.h>
#endif

#include "io/io_loop.h"
#include "ckptio/threads.h"
#include "core/thread_start.h"
#include "io/direct_io.h"

namespace ckptio::io {
namespace {

using detail::AlignedBuffer;
constexpr size_t kBlock = detail::kDirectBlock;
uint64_t align_down(uint64_t v) { return detail::direct_align_down(v); }
uint64_t align_up(uint64_t v) { return detail::direct_align_up(v); }

}  // namespace

std::string_view write_backend_name(WriteBackend backend) {
  switch (backend) {
    case WriteBackend::Pwrite: return "pwrite";
    case WriteBackend::IoUring: return "io_uring";
  }
  return "unknown";
}

bool io_uring_available() {
#ifdef CKPTIO_HAVE_LIBURING
  static const bool available = [] {
    io_uring ring{};
    // Fails with ENOSYS on old kernels, EPERM when io_uring_disabled or a seccomp filter says no.
    if (io_uring_queue_init(4, &ring, 0) != 0) return false;
    bool ok = false;
    if (io_uring_probe* probe = io_uring_get_probe_ring(&ring)) {
      ok = io_uring_opcode_supported(probe, IORING_OP_WRITE) != 0;
      io_uring_free_probe(probe);
    }
    io_uring_queue_exit(&ring);
    return ok;
  }();
  return available;
#else
  return false;
#endif
}

struct AsyncWriter::Impl {
  struct FileSlot {
    WritableFile* file = nullptr;               // buffered writes, sync, close
    std::unique_ptr<WritableFile> owned;        // set when the writer opened the file
    std::unique_ptr<WritableFile> direct;       // O_DIRECT companion, or null
    bool dirty = false;                         // written since the last synchronize()
    bool open = true;
  };

  struct Chunk {
    FileSlot* slot = nullptr;
    uint64_t offset = 0;
    const std::byte* data = nullptr;
    size_t size = 0;
    std::unique_ptr<std::byte[]> staged;  // submit_copy's copy
    std::string_view what;                // names the bytes in errors
  };

  AsyncWriterOptions options;
  Env* env = nullptr;
  WriteBackend backend = WriteBackend::Pwrite;
  size_t chunk = 0;
  bool early_writeback = false;

  mutable std::mutex mu;
  std::condition_variable work_cv;   // workers: queue not empty or stopping
  std::condition_variable space_cv;  // producers: bytes in flight dropped
  std::condition_variable idle_cv;   // synchronize: nothing pending
  std::deque<Chunk> queue;
  std::deque<FileSlot> slots;  // deque: stable addresses
  uint64_t in_flight = 0;      // bytes submitted (or reserved) and not yet completed
  uint64_t peak = 0;
  uint64_t written = 0;
  // Bytes each path moved (successful writes only): what really ran, for callers and tests.
  std::atomic<uint64_t> by_env{0}, by_uring{0}, by_direct{0};
  uint64_t pending = 0;  // chunks queued or being written
  std::optional<Error> first_error;
  bool error_collected = true;
  bool stopping = false;
  std::vector<std::thread> workers;
  bool write_inline = false;  // no worker could start: submit() writes

  explicit Impl(AsyncWriterOptions o) : options(std::move(o)) {
    env = options.env != nullptr ? options.env : &Env::posix();
    if (options.threads == 0) options.threads = default_threads();
    if (options.uring_depth == 0) options.uring_depth = 1;
    early_writeback = options.early_writeback.value_or(options.sync);
    uint64_t c = std::min<uint64_t>(options.chunk_bytes, options.max_bytes_in_flight);
    c = std::min<uint64_t>(c, kMaxIoChunk);
    chunk = static_cast<size_t>(std::max<uint64_t>(align_down(c), kBlock));
    if (options.max_bytes_in_flight < chunk) options.max_bytes_in_flight = chunk;
    backend = options.backend == WriteBackend::IoUring && io_uring_available()
                  ? WriteBackend::IoUring
                  : WriteBackend::Pwrite;
    for (unsigned i = 0; i < options.threads; ++i) {
      try {
        workers.push_back(start_thread([this] {
          if (backend == WriteBackend::IoUring) {
            uring_loop();
          } else {
            pwrite_loop();
          }
        }, "an I/O writer thread"));
      } catch (const Error&) {
        // Fewer writers still write everything; with none, each chunk is written on the thread
        // that submits it, so a synchronous save never fails for want of a thread.
        break;
      }
    }
    write_inline = workers.empty();
  }

  void stop_and_join() {
    {
      std::unique_lock lock(mu);
      idle_cv.wait(lock, [&] { return pending == 0; });
      stopping = true;
    }
    work_cv.notify_all();
    for (std::thread& t : workers) {
      if (t.joinable()) t.join();
    }
    workers.clear();
  }

  // Caller holds mu.
  void record_error(Error e, std::string_view what = {}) {
    if (!what.empty()) e = e.annotate(what);
    if (!first_error) {
      first_error = std::move(e);
      error_collected = false;
    }
  }

  void buffered_write(FileSlot& s, uint64_t offset, std::span<const std::byte> bytes) {
    s.file->write_at(offset, bytes);
    by_env += bytes.size();
    if (early_writeback) s.file->start_writeback(offset, bytes.size());
  }

  // Writes one chunk with blocking calls; throws Error naming file and offset.
  void write_chunk(const Chunk& c, AlignedBuffer& staging) {
    FileSlot& s = *c.slot;
    if (s.direct == nullptr || c.size < kBlock) {
      buffered_write(s, c.offset, {c.data, c.size});
      return;
    }
    const uint64_t end = c.offset + c.size;
    const uint64_t mid_begin = align_up(c.offset);
    const uint64_t mid_end = align_down(end);
    if (mid_begin >= mid_end) {
      buffered_write(s, c.offset, {c.data, c.size});
      return;
    }
    if (mid_begin > c.offset) {
      buffered_write(s, c.offset, {c.data, static_cast<size_t>(mid_begin - c.offset)});
    }
    const std::byte* mid = c.data + (mid_begin - c.offset);
    const auto mid_size = static_cast<size_t>(mid_end - mid_begin);
    if (reinterpret_cast<uintptr_t>(mid) % kBlock == 0) {
      s.direct->write_at(mid_begin, {mid, mid_size});
      by_direct += mid_size;
    } else {
      if (!staging) staging = detail::aligned_buffer(chunk);
      for (size_t done = 0; done < mid_size;) {
        const size_t n = std::min(chunk, mid_size - done);
        std::memcpy(staging.get(), mid + done, n);
        s.direct->write_at(mid_begin + done, {staging.get(), n});
        by_direct += n;
        done += n;
      }
    }
    if (end > mid_end) {
      buffered_write(s, mid_end,
                     {c.data + (mid_end - c.offset), static_cast<size_t>(end - mid_end)});
    }
  }

  bool failed_locked() const { return first_error.has_value(); }

  void complete(Chunk& c, bool ok) {
    std::lock_guard lock(mu);
    in_flight -= c.size;
    if (ok) written += c.size;
    --pending;
    c.staged.reset();
    space_cv.notify_all();
    if (pending == 0) idle_cv.notify_all();
  }

  void run_blocking(Chunk& c, AlignedBuffer& staging) {
    bool skip;
    {
      std::lock_guard lock(mu);
      skip = failed_locked();  // after a failure the period is lost anyway; fail fast
    }
    bool ok = false;
    if (!skip) {
      try {
        write_chunk(c, staging);
        ok = true;
      } catch (const Error& e) {
        std::lock_guard lock(mu);
        record_error(e, c.what);
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        record_error(Error(ErrorCode::IoError, "write '" + c.slot->file->path().string() +
                                                   "' at byte " + std::to_string(c.offset) +
                                                   ": " + e.what()),
                     c.what);
      }
    }
    complete(c, ok);
  }

  void pwrite_loop() {
    AlignedBuffer staging;
    for (;;) {
      Chunk c;
      {
        std::unique_lock lock(mu);
        work_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        c = std::move(queue.front());
        queue.pop_front();
      }
      run_blocking(c, staging);
    }
  }

#ifdef CKPTIO_HAVE_LIBURING
  struct UringOp {
    Chunk chunk;
    size_t done = 0;
    int fd = -1;
  };

  void uring_loop() {
    io_uring ring{};
    if (io_uring_queue_init(options.uring_depth, &ring, 0) != 0) {
      pwrite_loop();  // probe passed but this ring failed (memlock limits): stay correct
      return;
    }
    AlignedBuffer staging;
    std::vector<std::unique_ptr<UringOp>> ops;  // prepared or in the kernel; at most depth
    size_t in_kernel = 0;                      // submitted and not yet completed
    // Asks the file before each attempt (a wrapping Env may fail it, shorten it or interrupt
    // it), then queues the SQE. Returns 0, or the errno the attempt ends with unsubmitted.
    auto prep = [&](UringOp* op, bool first) -> int {
      for (;;) {
        const size_t left = op->chunk.size - op->done;
        const WritableFile::WritePlan plan =
            op->chunk.slot->file->plan_write(op->chunk.offset + op->done, left, first);
        if (plan.error == EINTR) {
          first = false;
          continue;
        }
        if (plan.error != 0) return plan.error;
        if (plan.len == 0) return EIO;  // a plan that moves nothing would loop forever
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);  // never null: at most depth ops exist
        io_uring_prep_write(sqe, op->fd, op->chunk.data + op->done,
                            static_cast<unsigned>(std::min(plan.len, left)),
                            op->chunk.offset + op->done);
        io_uring_sqe_set_data(sqe, op);
        return 0;
      }
    };
    // Hands prepared SQEs to the kernel. Transient refusals (EAGAIN, EBUSY) are retried, after
    // completions when there are some to wait for. Returns the errno of a ring that cannot
    // submit at all, else 0.
    auto flush = [&]() -> int {
      while (io_uring_sq_ready(&ring) > 0) {
        const int r = io_uring_submit(&ring);
        if (r > 0) {
          in_kernel += static_cast<size_t>(r);
          continue;
        }
        if (r == -EINTR) continue;
        if (r < 0 && r != -EAGAIN && r != -EBUSY) return -r;
        if (in_kernel > 0) return 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return 0;
    };
    auto where = [](const UringOp* op) {
      return "write '" + op->chunk.slot->file->path().string() + "' at byte " +
             std::to_string(op->chunk.offset + op->done);
    };
    auto finish = [&](UringOp* op, bool ok) {
      if (ok) {
        by_uring += op->chunk.size;
        if (early_writeback) {
          op->chunk.slot->file->start_writeback(op->chunk.offset, op->chunk.size);
        }
      }
      complete(op->chunk, ok);
      for (auto& o : ops) {
        if (o.get() == op) {
          o = std::move(ops.back());
          ops.pop_back();
          break;
        }
      }
    };
    auto fail_op = [&](UringOp* op, int error) {
      {
        std::lock_guard lock(mu);
        record_error(system_error(error, where(op)), op->chunk.what);
      }
      finish(op, false);
    };
    int broken = 0;
    for (;;) {
      // Take as many chunks as the ring has room for; block only when the ring is idle.
      std::vector<Chunk> taken;
      {
        std::unique_lock lock(mu);
        if (ops.empty()) {
          work_cv.wait(lock, [&] { return stopping || !queue.empty(); });
          if (queue.empty()) break;
        }
        while (!queue.empty() && ops.size() + taken.size() < options.uring_depth) {
          taken.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      for (Chunk& c : taken) {
        const int fd = c.slot->file->fd();
        bool skip;
        {
          std::lock_guard lock(mu);
          skip = failed_locked();
        }
        if (skip || fd < 0 || c.slot->direct != nullptr) {
          // Files without a descriptor (an in-memory Env) and O_DIRECT files take the blocking
          // path, which has the alignment handling.
          run_blocking(c, staging);
          continue;
        }
        auto op = std::make_unique<UringOp>();
        op->chunk = std::move(c);
        op->fd = fd;
        UringOp* raw = op.get();
        ops.push_back(std::move(op));
        if (const int e = prep(raw, true)) fail_op(raw, e);
      }
      if ((broken = flush()) != 0) break;
      if (in_kernel == 0) continue;
      io_uring_cqe* cqe = nullptr;
      int r;
      while ((r = io_uring_wait_cqe(&ring, &cqe)) == -EINTR) {
      }
      if (r < 0) {
        broken = -r;
        break;
      }
      do {
        auto* op = static_cast<UringOp*>(io_uring_cqe_get_data(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        --in_kernel;
        op->chunk.slot->file->write_completed(op->chunk.offset + op->done, res);
        if (res == -EINTR || res == -EAGAIN) {
          if (const int e = prep(op, false)) fail_op(op, e);
        } else if (res < 0) {
          fail_op(op, -res);
        } else if (res == 0) {
          {
            std::lock_guard lock(mu);
            record_error(Error(ErrorCode::IoError, where(op) + " made no progress"),
                         op->chunk.what);
          }
          finish(op, false);
        } else {
          op->done += static_cast<size_t>(res);
          if (op->done < op->chunk.size) {
            // Short write: continue where it stopped.
            if (const int e = prep(op, false)) fail_op(op, e);
          } else {
            finish(op, true);
          }
        }
      } while (io_uring_peek_cqe(&ring, &cqe) == 0);
    }
    if (broken != 0) {
      // The ring cannot submit or reap. Report it, let the kernel finish what it has (it may
      // still read the callers' buffers), fail the rest, and carry on without io_uring.
      {
        std::lock_guard lock(mu);
        record_error(system_error(broken, "io_uring"));
      }
      while (in_kernel > 0) {
        io_uring_cqe* cqe = nullptr;
        if (io_uring_wait_cqe(&ring, &cqe) != 0) break;
        io_uring_cqe_seen(&ring, cqe);
        --in_kernel;
      }
      for (auto& op : ops) complete(op->chunk, false);
      ops.clear();
      io_uring_queue_exit(&ring);  // unsubmitted SQEs die with the ring
      pwrite_loop();
      return;
    }
    io_uring_queue_exit(&ring);
  }
#else
  void uring_loop() { pwrite_loop(); }
#endif

  FileSlot& slot_for(FileId id) {
    std::lock_guard lock(mu);
    if (id >= slots.size() || !slots[id].open) {
      throw Error(ErrorCode::InvalidArgument,
                  "async writer: file id " + std::to_string(id) + " is not open");
    }
    return slots[id];
  }

  void throw_if_failed_locked() {
    if (first_error) {
      error_collected = true;
      throw *first_error;
    }
  }

  // Splits [offset, offset+size) at multiples of `chunk` and queues each piece once it fits in
  // the bound. With `copy`, each piece is copied after its room is reserved.
  void enqueue(FileId id, uint64_t offset, std::span<const std::byte> bytes, bool copy,
               std::string_view what) {
    FileSlot& s = slot_for(id);
    size_t done = 0;
    while (done < bytes.size()) {
      const uint64_t off = offset + done;
      const uint64_t boundary = (off / chunk + 1) * chunk;
      const size_t n = static_cast<size_t>(std::min<uint64_t>(boundary - off, bytes.size() - done));
      Chunk c;
      c.slot = &s;
      c.offset = off;
      c.size = n;
      c.what = what;
      {
        std::unique_lock lock(mu);
        throw_if_failed_locked();
        space_cv.wait(lock, [&] {
          return in_flight + n <= options.max_bytes_in_flight || first_error.has_value();
        });
        throw_if_failed_locked();
        in_flight += n;
        peak = std::max(peak, in_flight);
        ++pending;
        s.dirty = true;
      }
      if (copy) {
        try {
          c.staged.reset(new std::byte[n]);
        } catch (...) {
          std::lock_guard lock(mu);
          in_flight -= n;
          --pending;
          space_cv.notify_all();
          if (pending == 0) idle_cv.notify_all();
          throw Error(ErrorCode::IoError, "async writer: out of memory staging " +
                                              std::to_string(n) + " bytes");
        }
        std::memcpy(c.staged.get(), bytes.data() + done, n);
        c.data = c.staged.get();
      } else {
        c.data = bytes.data() + done;
      }
      if (write_inline) {
        AlignedBuffer staging;
        run_blocking(c, staging);
      } else {
        {
          std::lock_guard lock(mu);
          queue.push_back(std::move(c));
        }
        work_cv.notify_one();
      }
      done += n;
    }
  }

  void synchronize() {
    std::vector<FileSlot*> dirty;
    {
      std::unique_lock lock(mu);
      idle_cv.wait(lock, [&] { return pending == 0; });
      for (FileSlot& s : slots) {
        if (s.dirty && s.open) dirty.push_back(&s);
        s.dirty = false;
      }
      if (first_error) {
        std::optional<Error> e = std::move(first_error);
        first_error.reset();
        error_collected = true;
        throw *e;
      }
    }
    if (!options.sync) return;
    for (FileSlot* s : dirty) {
      // One fdatasync covers the O_DIRECT writes too: it flushes the inode's data and the
      // device cache whichever descriptor wrote.
      s->file->sync();
    }
  }
};

AsyncWriter::AsyncWriter(AsyncWriterOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

AsyncWriter::~AsyncWriter() {
  impl_->stop_and_join();
  if (impl_->first_error && !impl_->error_collected) {
    const Error& e = *impl_->first_error;
    if (impl_->options.on_uncollected_error) {
      try {
        impl_->options.on_uncollected_error(e);
      } catch (...) {
        // A destructor must not throw; the handler had its chance.
      }
    } else {
      std::fprintf(stderr, "ckptio: async writer destroyed with an uncollected error: %s\n",
                   e.what());
    }
  }
  for (auto& s : impl_->slots) {
    // Owned files close in their destructors (errors ignored: nothing was promised without a
    // successful synchronize()).
    s.direct.reset();
    s.owned.reset();
  }
}

WriteBackend AsyncWriter::backend() const { return impl_->backend; }
const AsyncWriterOptions& AsyncWriter::options() const { return impl_->options; }

AsyncWriter::FileId AsyncWriter::open(const fs::path& path, OpenMode mode) {
  auto file = impl_->env->open_write(path, mode);
  std::unique_ptr<WritableFile> direct;
  if (impl_->options.direct_io) direct = impl_->env->open_write_direct(path);
  std::lock_guard lock(impl_->mu);
  Impl::FileSlot& s = impl_->slots.emplace_back();
  s.file = file.get();
  s.owned = std::move(file);
  s.direct = std::move(direct);
  return static_cast<FileId>(impl_->slots.size() - 1);
}

AsyncWriter::FileId AsyncWriter::attach(WritableFile& file) {
  std::unique_ptr<WritableFile> direct;
  if (impl_->options.direct_io) direct = impl_->env->open_write_direct(file.path());
  std::lock_guard lock(impl_->mu);
  Impl::FileSlot& s = impl_->slots.emplace_back();
  s.file = &file;
  s.direct = std::move(direct);
  return static_cast<FileId>(impl_->slots.size() - 1);
}

void AsyncWriter::submit(FileId file, uint64_t offset, std::span<const std::byte> bytes,
                         std::string_view what) {
  impl_->enqueue(file, offset, bytes, false, what);
}

void AsyncWriter::submit_copy(FileId file, uint64_t offset, std::span<const std::byte> bytes,
                              std::string_view what) {
  impl_->enqueue(file, offset, bytes, true, what);
}

void AsyncWriter::synchronize() { impl_->synchronize(); }

void AsyncWriter::close(FileId file) {
  synchronize();
  Impl::FileSlot& s = impl_->slot_for(file);
  s.open = false;
  std::unique_ptr<WritableFile> direct = std::move(s.direct);
  std::unique_ptr<WritableFile> owned = std::move(s.owned);
  if (direct) direct->close();
  if (owned) owned->close();
}

bool AsyncWriter::uses_direct_io(FileId file) const {
  return impl_->slot_for(file).direct != nullptr;
}

uint64_t AsyncWriter::bytes_in_flight() const {
  std::lock_guard lock(impl_->mu);
  return impl_->in_flight;
}

uint64_t AsyncWriter::peak_bytes_in_flight() const {
  std::lock_guard lock(impl_->mu);
  return impl_->peak;
}

uint64_t AsyncWriter::bytes_written() const {
  std::lock_guard lock(impl_->mu);
  return impl_->written;
}

AsyncWriter::WrittenBy AsyncWriter::bytes_written_by() const {
  WrittenBy w;
  w.env_writes = impl_->by_env.load();
  w.io_uring = impl_->by_uring.load();
  w.direct_io = impl_->by_direct.load();
  return w;
}

}  // namespace ckptio::io
