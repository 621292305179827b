// The retry loops every positional transfer goes through: split below what Linux moves in one
// call, continue after short transfers, retry EINTR, and turn anything else into an Error naming
// the file and the byte offset. The POSIX Env and the fault-injecting Env share them, so the
// fault tests exercise the same loop production code runs.
#pragma once

#include <sys/types.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>

#include "ckptio/io.h"

namespace ckptio::io::detail {

// One attempt: like pwrite/pread, returns bytes moved (possibly fewer than asked) or -1 with
// errno set. `want` never exceeds kMaxIoChunk.
template <typename Attempt>
void write_all(const fs::path& path, uint64_t offset, std::span<const std::byte> src,
               Attempt&& attempt);
template <typename Attempt>
void read_all(const fs::path& path, uint64_t offset, std::span<std::byte> dst, Attempt&& attempt);

[[noreturn]] void throw_write_error(int errno_value, const fs::path& path, uint64_t offset);
[[noreturn]] void throw_write_no_progress(const fs::path& path, uint64_t offset);
[[noreturn]] void throw_read_error(int errno_value, const fs::path& path, uint64_t offset);
[[noreturn]] void throw_read_eof(const fs::path& path, uint64_t offset, uint64_t missing);

template <typename Attempt>
void write_all(const fs::path& path, uint64_t offset, std::span<const std::byte> src,
               Attempt&& attempt) {
  size_t done = 0;
  while (done < src.size()) {
    const size_t want = src.size() - done < kMaxIoChunk ? src.size() - done : kMaxIoChunk;
    const ssize_t n = attempt(src.data() + done, want, offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_write_error(errno, path, offset + done);
    }
    if (n == 0) throw_write_no_progress(path, offset + done);
    done += static_cast<size_t>(n);
  }
}

template <typename Attempt>
void read_all(const fs::path& path, uint64_t offset, std::span<std::byte> dst, Attempt&& attempt) {
  size_t done = 0;
  while (done < dst.size()) {
    const size_t want = dst.size() - done < kMaxIoChunk ? dst.size() - done : kMaxIoChunk;
    const ssize_t n = attempt(dst.data() + done, want, offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_read_error(errno, path, offset + done);
    }
    if (n == 0) throw_read_eof(path, offset + done, dst.size() - done);
    done += static_cast<size_t>(n);
  }
}

}  // namespace ckptio::io::detail
