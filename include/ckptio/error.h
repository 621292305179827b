// ckptio::Error: the one exception type the library throws.
//
// Every failure carries a code a program can branch on and a message a person can act on: the
// file, the tensor and the byte offset where they are known. Context is added as the error travels
// up (Error::annotate), so a failure deep in a reader still says which checkpoint it was reading.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ckptio {

enum class ErrorCode : uint8_t {
  InvalidArgument,  // the caller asked for something malformed (bad option, wrong shape)
  NotFound,         // a file, tensor, key or checkpoint does not exist
  Corrupt,          // the bytes on disk break the format's rules
  Unsupported,      // well-formed, but a feature or variant ckptio does not handle
  Unsafe,           // the input asks for something ckptio will never do (e.g. run code)
  IoError,          // the operating system reported a failure (EIO, EACCES, ...)
  NoSpace,          // ENOSPC / EDQUOT
  AlreadyExists,    // refusing to overwrite something that exists
  Mismatch,         // two things that must agree do not (strict load, checksum, diff)
  Internal,         // a bug in ckptio
  Timeout,          // a collective or wait exceeded the caller's bound
};

// Stable lower-case name of a code ("corrupt", "no_space", ...), used by the CLI.
std::string_view error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message);

  ErrorCode code() const noexcept { return code_; }
  // The message without the code prefix.
  const std::string& message() const noexcept { return message_; }
  // what() is "<code>: <message>".
  const char* what() const noexcept override { return full_.c_str(); }

  // Returns a copy whose message is "<context>: <message>"; used to add the outer file or step.
  Error annotate(std::string_view context) const;

 private:
  ErrorCode code_;
  std::string message_;
  std::string full_;
};

// `s` with control characters replaced by \xNN, so that names from files cannot drive a terminal
// and a message stays on one line (the CLI and the Python exceptions print errors through it).
std::string printable(std::string_view s);

// Error for a failed system call: maps errno to a code (ENOSPC/EDQUOT -> NoSpace, ENOENT ->
// NotFound, EEXIST -> AlreadyExists, else IoError) and appends strerror.
Error system_error(int errno_value, std::string_view what);

}  // namespace ckptio
