// The hub's weak lock: the Env's lock with a bounded wait, and no lock rather than an error.
#include "hub/file_lock.h"

#include "ckptio/error.h"

namespace ckptio::hub {

FileLock::FileLock(io::Env& env, const std::filesystem::path& path,
                   std::chrono::milliseconds max_wait, const std::function<bool()>& done) {
  try {
    lock_ = io::lock_file_within(env, path, max_wait, done);
  } catch (const Error&) {
    // A read-only cache, or a lock that cannot be taken: go on without it (only duplicate work).
  }
}

}  // namespace ckptio::hub
