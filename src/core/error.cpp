#include "ckptio/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace ckptio {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument: return "invalid_argument";
    case ErrorCode::NotFound: return "not_found";
    case ErrorCode::Corrupt: return "corrupt";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::Unsafe: return "unsafe";
    case ErrorCode::IoError: return "io_error";
    case ErrorCode::NoSpace: return "no_space";
    case ErrorCode::AlreadyExists: return "already_exists";
    case ErrorCode::Mismatch: return "mismatch";
    case ErrorCode::Internal: return "internal";
    case ErrorCode::Timeout: return "timeout";
  }
  return "unknown";
}

Error::Error(ErrorCode code, std::string message)
    : std::runtime_error(message),
      code_(code),
      message_(std::move(message)),
      full_(std::string(error_code_name(code_)) + ": " + message_) {}

Error Error::annotate(std::string_view context) const {
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Error(code_, std::move(msg));
}

Error system_error(int errno_value, std::string_view what) {
  ErrorCode code = ErrorCode::IoError;
  switch (errno_value) {
    case ENOSPC:
    case EDQUOT: code = ErrorCode::NoSpace; break;
    case ENOENT:
    case ENOTDIR: code = ErrorCode::NotFound; break;
    case EEXIST:
    case ENOTEMPTY: code = ErrorCode::AlreadyExists; break;
    default: break;
  }
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(errno_value);
  return Error(code, std::move(msg));
}

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace ckptio
