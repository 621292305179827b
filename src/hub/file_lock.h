// A best-effort inter-process lock on <cache>/.locks/<repo>/<etag>.lock (the Env's lock_file),
// like huggingface_hub's WeakFileLock: it keeps two processes from downloading the same blob
// twice, but correctness never depends on it (each download has its own .incomplete name and the
// final rename is atomic), because flock silently succeeds for everyone on some network
// filesystems.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>

#include "ckptio/io.h"

namespace ckptio::hub {

class FileLock {
 public:
  // Waits for the lock, polling, until it is taken, `done()` says the work is no longer needed
  // (another process finished it), or `max_wait` passes; in the last two cases, and when the
  // lock file cannot be created (a read-only cache), the lock is not held (held() is false).
  FileLock(io::Env& env, const std::filesystem::path& path, std::chrono::milliseconds max_wait,
           const std::function<bool()>& done);
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  bool held() const { return lock_ != nullptr; }

 private:
  std::unique_ptr<io::FileLock> lock_;
};

}  // namespace ckptio::hub
