#include "kill_env.h"

#include <csignal>
#include <string>

namespace ckptio::dist::testing {

namespace {

class KillFile final : public io::WritableFile {
 public:
  KillFile(KillEnv& env, std::unique_ptr<io::WritableFile> base) : env_(env), base_(std::move(base)) {}
  const fs::path& path() const override { return base_->path(); }
  void write_at(uint64_t offset, std::span<const std::byte> src) override {
    env_.step("write_at", path());
    base_->write_at(offset, src);
  }
  void truncate(uint64_t size) override {
    env_.step("truncate", path());
    base_->truncate(size);
  }
  void sync() override {
    env_.step("sync", path());
    base_->sync();
  }
  void close() override {
    env_.step("close", path());
    base_->close();
  }

 private:
  KillEnv& env_;
  std::unique_ptr<io::WritableFile> base_;
};

}  // namespace

KillEnv::KillEnv(uint64_t kill_at, std::FILE* log, io::Env& base)
    : base_(base), log_(log), kill_at_(kill_at) {}

void KillEnv::step(std::string_view what, const std::filesystem::path& path) {
  std::lock_guard lock(mu_);
  ++calls_;
  if (log_) {
    std::fprintf(log_, "%llu %.*s%s%s\n", static_cast<unsigned long long>(calls_),
                 static_cast<int>(what.size()), what.data(), path.empty() ? "" : " ",
                 path.filename().c_str());
  }
  if (calls_ == kill_at_) {
    if (log_) std::fputs("KILL\n", log_);
    if (log_) std::fflush(log_);
    std::raise(SIGKILL);
  }
  // Written through to the kernel line by line: a kill by another rank's death loses nothing.
  if (log_) std::fflush(log_);
}

uint64_t KillEnv::calls() const {
  std::lock_guard lock(mu_);
  return calls_;
}

std::unique_ptr<io::ReadableFile> KillEnv::open_read(const fs::path& path) {
  step("open_read", path);
  return base_.open_read(path);
}
std::unique_ptr<io::WritableFile> KillEnv::open_write(const fs::path& path, io::OpenMode mode) {
  step("open_write", path);
  return std::make_unique<KillFile>(*this, base_.open_write(path, mode));
}
std::shared_ptr<const io::MappedFile> KillEnv::map_read(const fs::path& path) {
  step("map_read", path);
  return base_.map_read(path);
}
std::shared_ptr<const io::MappedFile> KillEnv::map_open_file(const io::ReadableFile& file) {
  step("map_open_file", file.path());
  return base_.map_open_file(file);
}
void KillEnv::rename(const fs::path& from, const fs::path& to) {
  step("rename", to);
  base_.rename(from, to);
}
void KillEnv::sync_dir(const fs::path& dir) {
  step("sync_dir", dir);
  base_.sync_dir(dir);
}
void KillEnv::remove(const fs::path& path) {
  step("remove", path);
  base_.remove(path);
}
void KillEnv::remove_all(const fs::path& path) {
  step("remove_all", path);
  base_.remove_all(path);
}
void KillEnv::create_dirs(const fs::path& path) {
  step("create_dirs", path);
  base_.create_dirs(path);
}
std::vector<std::string> KillEnv::list_dir(const fs::path& dir) {
  step("list_dir", dir);
  return base_.list_dir(dir);
}
io::FileInfo KillEnv::stat(const fs::path& path) {
  step("stat", path);
  return base_.stat(path);
}
io::FileInfo KillEnv::stat_target(const fs::path& path) {
  step("stat_target", path);
  return base_.stat_target(path);
}
fs::path KillEnv::real_path(const fs::path& path) {
  step("real_path", path);
  return base_.real_path(path);
}
void KillEnv::create_symlink(const fs::path& target, const fs::path& link) {
  step("create_symlink", link);
  base_.create_symlink(target, link);
}
fs::path KillEnv::read_symlink(const fs::path& link) {
  step("read_symlink", link);
  return base_.read_symlink(link);
}
std::unique_ptr<io::FileLock> KillEnv::lock_file(const fs::path& path, io::LockCreate create) {
  step("lock_file", path);
  return base_.lock_file(path, create);
}
void KillEnv::exchange(const fs::path& a, const fs::path& b) {
  step("exchange", b);
  base_.exchange(a, b);
}

}  // namespace ckptio::dist::testing
