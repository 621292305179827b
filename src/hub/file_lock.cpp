// flock-based weak lock with a bounded wait.
#include "hub/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <thread>

namespace ckptio::hub {

FileLock::FileLock(const std::filesystem::path& path, std::chrono::milliseconds max_wait,
                   const std::function<bool()>& done) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) return;  // read-only cache: go on without the lock
  const auto deadline = std::chrono::steady_clock::now() + max_wait;
  while (true) {
    if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) {
      held_ = true;
      return;
    }
    if (errno != EWOULDBLOCK && errno != EINTR) return;
    if (done() || std::chrono::steady_clock::now() >= deadline) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) {
    if (held_) ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
}

}  // namespace ckptio::hub
