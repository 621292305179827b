// The errors of the transfer loops, out of line so the templates stay small.
#include "io/io_loop.h"

#include <string>

#include "ckptio/error.h"

namespace ckptio::io::detail {
namespace {
std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }
}  // namespace

void throw_write_error(int errno_value, const fs::path& path, uint64_t offset) {
  throw system_error(errno_value, "write " + quoted(path) + " at byte " + std::to_string(offset));
}

void throw_write_no_progress(const fs::path& path, uint64_t offset) {
  throw Error(ErrorCode::IoError,
              "write " + quoted(path) + " at byte " + std::to_string(offset) + " made no progress");
}

void throw_read_error(int errno_value, const fs::path& path, uint64_t offset) {
  throw system_error(errno_value, "read " + quoted(path) + " at byte " + std::to_string(offset));
}

void throw_read_eof(const fs::path& path, uint64_t offset, uint64_t missing) {
  throw Error(ErrorCode::Corrupt, "unexpected end of file " + quoted(path) + " at byte " +
                                      std::to_string(offset) + " (wanted " +
                                      std::to_string(missing) + " more bytes)");
}

}  // namespace ckptio::io::detail
