// The POSIX Env: pread/pwrite in bounded chunks, every result checked.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>  // renameat2
#include <stdlib.h>  // realpath
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <thread>

#include "ckptio/error.h"
#include "ckptio/io.h"
#include "io/io_loop.h"
#include "io/posix_read.h"

namespace ckptio::io {
namespace {

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(fs::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  const fs::path& path() const override { return path_; }
  int fd() const override { return fd_; }

  void write_at(uint64_t offset, std::span<const std::byte> src) override {
    check_open();
    detail::write_all(path_, offset, src, [&](const std::byte* p, size_t n, uint64_t off) {
      return ::pwrite(fd_, p, n, static_cast<off_t>(off));
    });
  }

  void truncate(uint64_t size) override {
    check_open();
    while (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      if (errno != EINTR) throw system_error(errno, "truncate " + quoted(path_));
    }
  }

  void sync() override {
    check_open();
    while (::fdatasync(fd_) != 0) {
      if (errno != EINTR) throw system_error(errno, "fsync " + quoted(path_));
    }
  }

  void start_writeback(uint64_t offset, uint64_t len) override {
    if (fd_ < 0 || len == 0) return;
    // SYNC_FILE_RANGE_WRITE queues the range's dirty pages for writeback and returns; it is a
    // hint, so a failure (a filesystem without it) is ignored: sync() reports real errors.
    (void)::sync_file_range(fd_, static_cast<off64_t>(offset), static_cast<off64_t>(len),
                            SYNC_FILE_RANGE_WRITE);
  }

  void close() override {
    if (fd_ < 0) return;
    const int fd = fd_;
    fd_ = -1;
    // close() is not retried on EINTR on Linux: the descriptor is gone either way.
    if (::close(fd) != 0 && errno != EINTR) throw system_error(errno, "close " + quoted(path_));
  }

 private:
  void check_open() const {
    if (fd_ < 0) throw Error(ErrorCode::InvalidArgument, "file " + quoted(path_) + " is closed");
  }
  fs::path path_;
  int fd_;
};

class PosixMappedFile final : public MappedFile {
 public:
  PosixMappedFile(fs::path path, void* addr, size_t size)
      : path_(std::move(path)), addr_(addr), size_(size) {}
  ~PosixMappedFile() override {
    if (addr_ != nullptr) ::munmap(addr_, size_);
  }
  const fs::path& path() const override { return path_; }
  std::span<const std::byte> bytes() const override {
    return {static_cast<const std::byte*>(addr_), size_};
  }

 private:
  fs::path path_;
  void* addr_;
  size_t size_;
};

// Maps the whole of the open file `fd` (the caller keeps and closes it).
std::shared_ptr<const MappedFile> map_descriptor(const fs::path& path, int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw system_error(errno, "stat " + quoted(path));
  const auto size = static_cast<size_t>(st.st_size);
  void* addr = nullptr;
  if (size > 0) {
    addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) throw system_error(errno, "mmap " + quoted(path));
  }
  return std::make_shared<PosixMappedFile>(path, addr, size);
}

int open_retry(const char* path, int flags, mode_t mode = 0) {
  for (;;) {
    const int fd = ::open(path, flags | O_CLOEXEC, mode);
    if (fd >= 0 || errno != EINTR) return fd;
  }
}

FileInfo info_of(const struct stat& st) {
  FileInfo info;
  info.exists = true;
  info.is_symlink = S_ISLNK(st.st_mode);
  info.is_directory = S_ISDIR(st.st_mode);
  info.is_regular_file = S_ISREG(st.st_mode);
  info.size = static_cast<uint64_t>(st.st_size);
  info.device = static_cast<uint64_t>(st.st_dev);
  info.inode = static_cast<uint64_t>(st.st_ino);
  return info;
}

// The lock lives on an open file description of its own: flock(2) locks conflict between
// descriptions even within one process, so two holders in one process exclude each other too.
class PosixFileLock final : public FileLock {
 public:
  PosixFileLock(fs::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // closing the description releases the lock
  const fs::path& path() const override { return path_; }

 private:
  fs::path path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  std::unique_ptr<ReadableFile> open_read(const fs::path& path) override {
    const int fd = open_retry(path.c_str(), O_RDONLY);
    if (fd < 0) throw system_error(errno, "open " + quoted(path));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw system_error(e, "stat " + quoted(path));
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      throw Error(ErrorCode::InvalidArgument, quoted(path) + " is a directory, not a file");
    }
    return detail::make_posix_readable(path, fd, static_cast<uint64_t>(st.st_size));
  }

  std::unique_ptr<WritableFile> open_write(const fs::path& path, OpenMode mode) override {
    int flags = O_WRONLY;
    switch (mode) {
      case OpenMode::CreateNew: flags |= O_CREAT | O_EXCL; break;
      case OpenMode::Truncate: flags |= O_CREAT | O_TRUNC; break;
      case OpenMode::Existing: break;
    }
    const int fd = open_retry(path.c_str(), flags, 0644);
    if (fd < 0) throw system_error(errno, "create " + quoted(path));
    return std::make_unique<PosixWritableFile>(path, fd);
  }

  std::shared_ptr<const MappedFile> map_read(const fs::path& path) override {
    const int fd = open_retry(path.c_str(), O_RDONLY);
    if (fd < 0) throw system_error(errno, "open " + quoted(path));
    try {
      auto map = map_descriptor(path, fd);
      ::close(fd);  // the mapping keeps the file referenced
      return map;
    } catch (...) {
      ::close(fd);
      throw;
    }
  }

  void rename(const fs::path& from, const fs::path& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      throw system_error(errno, "rename " + quoted(from) + " to " + quoted(to));
    }
  }

  void sync_dir(const fs::path& dir) override {
    const fs::path d = dir.empty() ? fs::path(".") : dir;
    const int fd = open_retry(d.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) throw system_error(errno, "open directory " + quoted(d));
    int rc;
    while ((rc = ::fsync(fd)) != 0 && errno == EINTR) {
    }
    const int e = errno;
    ::close(fd);
    if (rc != 0) throw system_error(e, "fsync directory " + quoted(d));
  }

  void remove(const fs::path& path) override {
    std::error_code ec;
    fs::remove(path, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      throw system_error(ec.value(), "remove " + quoted(path));
    }
  }

  void remove_all(const fs::path& path) override {
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      throw system_error(ec.value(), "remove " + quoted(path));
    }
  }

  void create_dirs(const fs::path& path) override {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw system_error(ec.value(), "create directory " + quoted(path));
  }

  std::vector<std::string> list_dir(const fs::path& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) throw system_error(errno, "list directory " + quoted(dir));
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      const std::string_view n = e->d_name;
      if (n != "." && n != "..") names.emplace_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
  }

  void exchange(const fs::path& a, const fs::path& b) override {
    if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) != 0) {
      const int e = errno;
      if (e == EINVAL || e == ENOSYS) {
        throw Error(ErrorCode::Unsupported, "atomic exchange of " + quoted(a) + " and " +
                                                quoted(b) + " is not supported here");
      }
      throw system_error(e, "exchange " + quoted(a) + " and " + quoted(b));
    }
  }

  std::unique_ptr<WritableFile> open_write_direct(const fs::path& path) override {
    const int fd = open_retry(path.c_str(), O_WRONLY | O_DIRECT);
    if (fd < 0) {
      // EINVAL: the filesystem has no direct I/O (tmpfs); the caller writes buffered instead.
      if (errno == EINVAL) return nullptr;
      throw system_error(errno, "open (O_DIRECT) " + quoted(path));
    }
    return std::make_unique<PosixWritableFile>(path, fd);
  }

  FileInfo stat(const fs::path& path) override {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return {};
      throw system_error(errno, "stat " + quoted(path));
    }
    return info_of(st);
  }

  FileInfo stat_target(const fs::path& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      // ELOOP: a cycle of links resolves to nothing, like a dangling one.
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return {};
      throw system_error(errno, "stat " + quoted(path));
    }
    return info_of(st);
  }

  fs::path real_path(const fs::path& path) override {
    char buf[PATH_MAX];
    if (::realpath(path.c_str(), buf) == nullptr) {
      throw system_error(errno, "resolve " + quoted(path));
    }
    return fs::path(buf);
  }

  void create_symlink(const fs::path& target, const fs::path& link) override {
    if (::symlink(target.c_str(), link.c_str()) != 0) {
      throw system_error(errno, "create symlink " + quoted(link) + " -> " + quoted(target));
    }
  }

  fs::path read_symlink(const fs::path& link) override {
    std::string buf(256, '\0');
    for (;;) {
      const ssize_t n = ::readlink(link.c_str(), buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINVAL) {
          throw Error(ErrorCode::InvalidArgument, quoted(link) + " is not a symlink");
        }
        throw system_error(errno, "read symlink " + quoted(link));
      }
      if (static_cast<size_t>(n) < buf.size()) {
        buf.resize(static_cast<size_t>(n));
        return fs::path(buf);
      }
      buf.resize(buf.size() * 2);  // possibly truncated: ask again with more room
    }
  }

  std::unique_ptr<FileLock> lock_file(const fs::path& path, LockCreate create) override {
    int fd;
    if (create == LockCreate::IfMissing) {
      if (path.has_parent_path()) create_dirs(path.parent_path());
      fd = open_retry(path.c_str(), O_RDWR | O_CREAT, 0644);
    } else {
      fd = open_retry(path.c_str(), O_RDONLY | O_NOFOLLOW);
    }
    if (fd < 0) throw system_error(errno, "open lock file " + quoted(path));
    for (;;) {
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return std::make_unique<PosixFileLock>(path, fd);
      const int e = errno;
      if (e == EINTR) continue;
      ::close(fd);
      if (e == EWOULDBLOCK) return nullptr;
      throw system_error(e, "lock " + quoted(path));
    }
  }
};

}  // namespace

void Env::exchange(const fs::path& a, const fs::path& b) {
  throw Error(ErrorCode::Unsupported,
              "this Env cannot exchange " + quoted(a) + " and " + quoted(b) + " atomically");
}

std::unique_ptr<WritableFile> Env::open_write_direct(const fs::path&) { return nullptr; }

FileInfo Env::stat_target(const fs::path& path) {
  const FileInfo info = stat(path);
  if (!info.is_symlink) return info;
  try {
    return stat(real_path(path));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::NotFound) return {};
    throw;
  }
}

fs::path Env::real_path(const fs::path& path) {
  if (!stat(path).exists) {
    throw Error(ErrorCode::NotFound, "resolve " + quoted(path) + ": no such file or directory");
  }
  return fs::absolute(path).lexically_normal();
}

void Env::create_symlink(const fs::path& target, const fs::path& link) {
  throw Error(ErrorCode::Unsupported, "this Env cannot create the symlink " + quoted(link) +
                                          " -> " + quoted(target));
}

fs::path Env::read_symlink(const fs::path& link) {
  throw Error(ErrorCode::Unsupported, "this Env cannot read the symlink " + quoted(link));
}

namespace {
class NoFileLock final : public FileLock {
 public:
  explicit NoFileLock(fs::path path) : path_(std::move(path)) {}
  const fs::path& path() const override { return path_; }

 private:
  fs::path path_;
};
}  // namespace

std::unique_ptr<FileLock> Env::lock_file(const fs::path& path, LockCreate) {
  return std::make_unique<NoFileLock>(path);
}

std::unique_ptr<FileLock> lock_file_within(Env& env, const fs::path& path,
                                           std::chrono::milliseconds max_wait,
                                           const std::function<bool()>& give_up) {
  const auto deadline = std::chrono::steady_clock::now() + max_wait;
  for (;;) {
    if (auto lock = env.lock_file(path, LockCreate::IfMissing)) return lock;
    if ((give_up && give_up()) || std::chrono::steady_clock::now() >= deadline) return nullptr;
    // flock has no timed wait; a short poll keeps the bound (and give_up) responsive.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::shared_ptr<const MappedFile> Env::map_open_file(const ReadableFile& file) {
  if (file.fd() < 0) return map_read(file.path());
  return map_descriptor(file.path(), file.fd());
}

Env& Env::posix() {
  static PosixEnv env;
  return env;
}

}  // namespace ckptio::io
