// The POSIX Env's readable file: pread, plus the two fast paths bulk readers use
// (ReadableFile::read_if_cached: memcpy out of a mapping of cached pages; ReadableFile::direct():
// an O_DIRECT twin of the same inode).
#pragma once

#include <cstdint>
#include <memory>

#include "ckptio/io.h"

namespace ckptio::io::detail {

// Takes ownership of `fd` (open for reading, a regular file of `size` bytes at open time).
std::unique_ptr<ReadableFile> make_posix_readable(fs::path path, int fd, uint64_t size);

}  // namespace ckptio::io::detail
