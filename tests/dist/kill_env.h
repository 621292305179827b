// KillEnv: an Env for crash tests that kills its own process at a chosen call.
//
// It passes every call to a base Env (POSIX by default) and numbers the calls of this process:
// Env methods and the methods of the files it hands out (write_at, truncate, sync, close), plus
// any moment the test marks itself with step(). At call number `kill_at` (1-based; 0 = never) it
// raises SIGKILL on the process before the call runs, so a test chooses the moment of death by
// number instead of by timing. Numbering is the same from run to run (only the order of one
// file's concurrent writes may vary), so a dry run's log lists every moment a later run can pick.
//
// Each call is logged as "<number> <call> <file name>" and flushed at once, so that the log
// survives the kill and says which call was the last one (the kill itself is logged "KILL").
// Files hand out no descriptor (fd() == -1), so every write goes through write_at and is counted.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string_view>

#include "ckptio/io.h"

namespace ckptio::dist::testing {

namespace fs = std::filesystem;

class KillEnv final : public io::Env {
 public:
  // `log`: where each call is logged (nullptr: nowhere); owned by the caller.
  KillEnv(uint64_t kill_at, std::FILE* log, io::Env& base = io::Env::posix());

  // Numbers (and logs) a moment that is not an Env call, e.g. "save returned".
  void step(std::string_view what, const std::filesystem::path& path = {});
  uint64_t calls() const;

  std::unique_ptr<io::ReadableFile> open_read(const fs::path& path) override;
  std::unique_ptr<io::WritableFile> open_write(const fs::path& path, io::OpenMode mode) override;
  std::shared_ptr<const io::MappedFile> map_read(const fs::path& path) override;
  std::shared_ptr<const io::MappedFile> map_open_file(const io::ReadableFile& file) override;
  void rename(const fs::path& from, const fs::path& to) override;
  void sync_dir(const fs::path& dir) override;
  void remove(const fs::path& path) override;
  void remove_all(const fs::path& path) override;
  void create_dirs(const fs::path& path) override;
  std::vector<std::string> list_dir(const fs::path& dir) override;
  io::FileInfo stat(const fs::path& path) override;
  io::FileInfo stat_target(const fs::path& path) override;
  fs::path real_path(const fs::path& path) override;
  void create_symlink(const fs::path& target, const fs::path& link) override;
  fs::path read_symlink(const fs::path& link) override;
  std::unique_ptr<io::FileLock> lock_file(const fs::path& path, io::LockCreate create) override;
  void exchange(const fs::path& a, const fs::path& b) override;

 private:
  io::Env& base_;
  std::FILE* log_;
  uint64_t kill_at_;
  mutable std::mutex mu_;
  uint64_t calls_ = 0;
};

}  // namespace ckptio::dist::testing
