// The write backends fault and crash tests run over, a scratch folder where O_DIRECT works, and
// the check that the backend asked for is the one that moved the bytes (so that a fault Env that
// silently made the writer fall back to plain Env writes fails the test instead of passing it).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "ckptio/async_writer.h"
#include "ckptio/io.h"

namespace ckptio::testing {

struct WriteBackendCase {
  io::WriteBackend backend;
  bool direct;
};

inline std::string write_backend_case_name(const WriteBackendCase& c) {
  return std::string(io::write_backend_name(c.backend)) + (c.direct ? "_direct" : "");
}

// pwrite, io_uring, O_DIRECT with pwrite, O_DIRECT with io_uring.
inline auto all_write_backends() {
  return ::testing::Values(WriteBackendCase{io::WriteBackend::Pwrite, false},
                           WriteBackendCase{io::WriteBackend::IoUring, false},
                           WriteBackendCase{io::WriteBackend::Pwrite, true},
                           WriteBackendCase{io::WriteBackend::IoUring, true});
}

inline bool supports_direct_io(const std::filesystem::path& dir) {
  const std::filesystem::path probe = dir / ".direct-io-probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return fd >= 0;
}

// A scratch folder on a filesystem with O_DIRECT: $TMPDIR when it has it (not tmpfs), else the
// build tree, which is on a real disk.
class DiskDir {
 public:
  DiskDir() {
    namespace fs = std::filesystem;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "ckptio";
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    fs::path base = fs::temp_directory_path();
    if (!supports_direct_io(base)) base = fs::path(CKPTIO_BIN_DIR) / "test-scratch";
    fs::create_directories(base);
    std::random_device rd;
    path_ = base / ("ckptio-disk-" + name + "-" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~DiskDir() {
    if (std::getenv("CKPTIO_KEEP_TEST_DIRS") == nullptr) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  DiskDir(const DiskDir&) = delete;
  DiskDir& operator=(const DiskDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Why `c` cannot run here, or "" when it can.
inline std::string write_backend_missing(const WriteBackendCase& c,
                                         const std::filesystem::path& dir) {
  if (c.backend == io::WriteBackend::IoUring && !io::io_uring_available()) {
    return "io_uring is not available here (kernel, seccomp or a build without liburing)";
  }
  if (c.direct && !supports_direct_io(dir)) {
    return "the filesystem of " + dir.string() + " has no O_DIRECT";
  }
  return "";
}

#define CKPTIO_SKIP_UNLESS_BACKEND(c, dir)                                   \
  do {                                                                        \
    const std::string missing_ = ::ckptio::testing::write_backend_missing(c, dir); \
    if (!missing_.empty()) GTEST_SKIP() << missing_;                          \
  } while (0)

// The writer really ran `c`: io_uring submitted bytes on the ring, O_DIRECT bytes went through
// the direct file, and pwrite alone used neither. Call after writes of at least a few blocks.
inline void expect_backend_ran(const io::AsyncWriter& w, const WriteBackendCase& c) {
  EXPECT_EQ(w.backend(), c.backend);
  const auto by = w.bytes_written_by();
  if (c.direct) {
    EXPECT_GT(by.direct_io, 0u) << "no byte went through O_DIRECT";
  } else {
    EXPECT_EQ(by.direct_io, 0u);
  }
  // io_uring hands O_DIRECT files to its blocking path (the alignment handling lives there).
  if (c.backend == io::WriteBackend::IoUring && !c.direct) {
    EXPECT_GT(by.io_uring, 0u) << "no byte went through the ring";
  } else {
    EXPECT_EQ(by.io_uring, 0u);
  }
}

// Passes everything to `base` and counts which path moved the bytes, for writers the test cannot
// ask (save_safetensors makes its own AsyncWriter): write_at of ordinary files, completions of
// submissions on the descriptor (io_uring), write_at of O_DIRECT files.
class ObservingEnv final : public io::Env {
  using Path = std::filesystem::path;

 public:
  explicit ObservingEnv(io::Env& base) : base_(base) {}
  std::atomic<uint64_t> via_write_at{0}, via_descriptor{0}, via_direct{0};
  // Bytes whose writeback the writer asked to start early (WritableFile::start_writeback).
  std::atomic<uint64_t> writeback_started{0};

  std::unique_ptr<io::ReadableFile> open_read(const Path& p) override { return base_.open_read(p); }
  std::unique_ptr<io::WritableFile> open_write(const Path& p, io::OpenMode m) override {
    return std::make_unique<File>(base_.open_write(p, m), *this, via_write_at);
  }
  std::unique_ptr<io::WritableFile> open_write_direct(const Path& p) override {
    auto f = base_.open_write_direct(p);
    if (f == nullptr) return nullptr;
    return std::make_unique<File>(std::move(f), *this, via_direct);
  }
  std::shared_ptr<const io::MappedFile> map_read(const Path& p) override { return base_.map_read(p); }
  void rename(const Path& a, const Path& b) override { base_.rename(a, b); }
  void exchange(const Path& a, const Path& b) override { base_.exchange(a, b); }
  void sync_dir(const Path& d) override { base_.sync_dir(d); }
  void remove(const Path& p) override { base_.remove(p); }
  void remove_all(const Path& p) override { base_.remove_all(p); }
  void create_dirs(const Path& p) override { base_.create_dirs(p); }
  std::vector<std::string> list_dir(const Path& d) override { return base_.list_dir(d); }
  io::FileInfo stat(const Path& p) override { return base_.stat(p); }
  io::FileInfo stat_target(const Path& p) override { return base_.stat_target(p); }
  Path real_path(const Path& p) override { return base_.real_path(p); }
  void create_symlink(const Path& t, const Path& l) override { base_.create_symlink(t, l); }
  Path read_symlink(const Path& l) override { return base_.read_symlink(l); }
  std::unique_ptr<io::FileLock> lock_file(const Path& p, io::LockCreate c) override {
    return base_.lock_file(p, c);
  }

 private:
  class File final : public io::WritableFile {
   public:
    File(std::unique_ptr<io::WritableFile> base, ObservingEnv& env, std::atomic<uint64_t>& count)
        : base_(std::move(base)), env_(env), count_(count) {}
    const std::filesystem::path& path() const override { return base_->path(); }
    void write_at(uint64_t offset, std::span<const std::byte> src) override {
      base_->write_at(offset, src);
      count_ += src.size();
    }
    void truncate(uint64_t size) override { base_->truncate(size); }
    void sync() override { base_->sync(); }
    void start_writeback(uint64_t offset, uint64_t len) override {
      env_.writeback_started += len;
      base_->start_writeback(offset, len);
    }
    void close() override { base_->close(); }
    int fd() const override { return base_->fd(); }
    WritePlan plan_write(uint64_t offset, size_t len, bool first) override {
      return base_->plan_write(offset, len, first);
    }
    void write_completed(uint64_t offset, ssize_t result) override {
      base_->write_completed(offset, result);
      if (result > 0) env_.via_descriptor += static_cast<uint64_t>(result);
    }

   private:
    std::unique_ptr<io::WritableFile> base_;
    ObservingEnv& env_;
    std::atomic<uint64_t>& count_;
  };
  io::Env& base_;
};

// The bytes an ObservingEnv saw took the path `c` asks for.
inline void expect_backend_ran(const ObservingEnv& env, const WriteBackendCase& c) {
  if (c.direct) {
    EXPECT_GT(env.via_direct.load(), 0u) << "no byte went through O_DIRECT";
  } else {
    EXPECT_EQ(env.via_direct.load(), 0u);
  }
  if (c.backend == io::WriteBackend::IoUring && !c.direct) {
    EXPECT_GT(env.via_descriptor.load(), 0u) << "no byte went through the ring";
  } else {
    EXPECT_EQ(env.via_descriptor.load(), 0u);
  }
}

}  // namespace ckptio::testing
