// The file layer: everything ckptio does to files goes through an Env (in the spirit of LevelDB's
// Env), so that tests can inject faults and backends can change without touching the formats.
//
// Contracts common to every method: paths are used as given; failures throw ckptio::Error whose
// message names the path (and the byte offset for reads and writes); nothing returns a partial
// success silently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckptio::io {

namespace fs = std::filesystem;

// Linux moves at most 0x7ffff000 bytes per read/write call; every transfer is split below that.
inline constexpr size_t kMaxIoChunk = size_t{1} << 30;

class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  virtual const fs::path& path() const = 0;
  virtual uint64_t size() const = 0;
  // Fills all of dst from `offset`, retrying short reads and EINTR. Reading past the end is
  // Error(Corrupt) naming the path and offset. Safe to call from several threads at once.
  virtual void read_exact(uint64_t offset, std::span<std::byte> dst) const = 0;
  // The descriptor, for backends that submit their own I/O (io_uring); -1 if there is none.
  virtual int fd() const { return -1; }
};

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual const fs::path& path() const = 0;
  // Writes all of src at `offset`, continuing after short writes and EINTR. Safe to call from
  // several threads at once for disjoint ranges.
  virtual void write_at(uint64_t offset, std::span<const std::byte> src) = 0;
  // Sets the file's length (used to drop stale bytes past a rewrite and to preallocate).
  virtual void truncate(uint64_t size) = 0;
  // fdatasync/fsync: returns only once the data is durable.
  virtual void sync() = 0;
  // Closes the descriptor and reports a close() failure. Destroying an unclosed file closes it
  // and ignores errors, so callers that care call close().
  virtual void close() = 0;
  virtual int fd() const { return -1; }
};

// A read-only memory map of a whole file. Tensors handed out by mmap readers keep it alive.
class MappedFile {
 public:
  virtual ~MappedFile() = default;
  virtual const fs::path& path() const = 0;
  virtual std::span<const std::byte> bytes() const = 0;
};

struct FileInfo {
  bool exists = false;
  bool is_directory = false;
  bool is_symlink = false;
  uint64_t size = 0;
};

enum class OpenMode : uint8_t {
  CreateNew,  // fail with AlreadyExists if the file exists
  Truncate,   // create or truncate
  Existing,   // open an existing file for writing, keep its bytes
};

class Env {
 public:
  virtual ~Env() = default;

  virtual std::unique_ptr<ReadableFile> open_read(const fs::path& path) = 0;
  virtual std::unique_ptr<WritableFile> open_write(const fs::path& path, OpenMode mode) = 0;
  virtual std::shared_ptr<const MappedFile> map_read(const fs::path& path) = 0;

  // rename(2): atomic replace of `to` within one filesystem.
  virtual void rename(const fs::path& from, const fs::path& to) = 0;
  // fsync of a directory, so that creations, renames and removals in it are durable.
  virtual void sync_dir(const fs::path& dir) = 0;
  // Removes a file or an empty directory; a missing path is not an error.
  virtual void remove(const fs::path& path) = 0;
  // Removes a tree; a missing path is not an error.
  virtual void remove_all(const fs::path& path) = 0;
  // mkdir -p.
  virtual void create_dirs(const fs::path& path) = 0;
  // Names (not paths) of the entries of a directory, sorted.
  virtual std::vector<std::string> list_dir(const fs::path& dir) = 0;
  // lstat: does not follow a final symlink (is_symlink reports it).
  virtual FileInfo stat(const fs::path& path) = 0;

  // The process-wide POSIX implementation.
  static Env& posix();
};

// A random suffix for temp names, unique across processes and threads.
std::string random_suffix();

// The crash-safe way to create or replace a file: fill `<dir>/.<name>.tmp-<random>`, fsync it,
// rename it over `path`, fsync the directory. On any failure the temp file is removed and `path`
// is untouched. `fill` writes the content through the WritableFile it is given.
void write_file_atomic(Env& env, const fs::path& path,
                       const std::function<void(WritableFile&)>& fill);
void write_file_atomic(Env& env, const fs::path& path, std::string_view contents);

// Reads a whole (small) file; refuses files over `max_bytes` with Error(Corrupt).
std::string read_small_file(Env& env, const fs::path& path, uint64_t max_bytes = 64u << 20);

// True for names write_file_atomic and the folder commit use for their temp files; owners use it
// to clean up after a crash.
bool is_temp_name(std::string_view name);

}  // namespace ckptio::io
