// A best-effort inter-process lock on <cache>/.locks/<repo>/<etag>.lock (flock), like
// huggingface_hub's WeakFileLock: it keeps two processes from downloading the same blob twice, but
// correctness never depends on it (each download has its own .incomplete name and the final
// rename is atomic), because flock silently succeeds for everyone on some network filesystems.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>

namespace ckptio::hub {

class FileLock {
 public:
  // Waits for the lock, polling, until it is taken, `done()` says the work is no longer needed
  // (another process finished it), or `max_wait` passes; in the last two cases, and when the
  // lock file cannot be created, the lock is not held (held() is false).
  FileLock(const std::filesystem::path& path, std::chrono::milliseconds max_wait,
           const std::function<bool()>& done);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  bool held() const { return held_; }

 private:
  int fd_ = -1;
  bool held_ = false;
};

}  // namespace ckptio::hub
