// The file layer: everything ckptio does to files goes through an Env (in the spirit of LevelDB's
// Env), so that tests can inject faults and backends can change without touching the formats.
//
// Contracts common to every method: paths are used as given; failures throw ckptio::Error whose
// message names the path (and the byte offset for reads and writes); nothing returns a partial
// success silently.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
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

  // --- Read-side fast paths for bulk readers (io::read_parallel); optional -----------------------
  // read_if_cached copies [offset, offset + dst.size()) out of the page cache through a read-only
  // mapping when those bytes are cached (the kernel's copy in pread is slower than memcpy):
  // Done when dst is filled, NotCached when the bytes are known not to be cached (nothing was
  // copied), Unknown when the file cannot tell or copy (the caller reads with read_exact; the
  // default). The file's current size is checked right before the copy, so a file that is
  // shorter than the range gives Unknown and read_exact then reports it; a file truncated by
  // someone else during the copy itself raises SIGBUS, as a mapped reader would.
  enum class CachedRead : uint8_t { Done, NotCached, Unknown };
  virtual CachedRead read_if_cached(uint64_t offset, std::span<std::byte> dst) const {
    (void)offset;
    (void)dst;
    return CachedRead::Unknown;
  }
  // The same open file (same inode) read past the page cache with O_DIRECT, opened on first use
  // and owned by this file; nullptr where the Env or the filesystem has none. Its read_exact
  // takes any offset, length and memory (unaligned edges go through an aligned bounce buffer)
  // and reports errors like this file's. Safe to call from several threads.
  virtual const ReadableFile* direct() const { return nullptr; }
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
  // Asks the kernel to start writing [offset, offset + len) of this file to the disk now,
  // without waiting for it and without promising anything: sync() alone makes bytes durable and
  // reports errors. A writer that will sync calls it behind its buffered writes, so that the
  // disk works while later bytes are still being copied into the page cache instead of all of
  // them waiting for sync(). The default does nothing (Envs without a disk, wrapping Envs).
  virtual void start_writeback(uint64_t offset, uint64_t len) {
    (void)offset;
    (void)len;
  }
  // Closes the descriptor and reports a close() failure. Destroying an unclosed file closes it
  // and ignores errors, so callers that care call close().
  virtual void close() = 0;

  // --- For engines that submit their own writes (io_uring) ---------------------------------------
  // The descriptor such an engine may write to; -1 when every write must go through write_at.
  virtual int fd() const { return -1; }
  // An engine that writes to fd() itself asks before every attempt and reports every completion,
  // so that an Env wrapping its files (fault injection, the power-cut model) sees and shapes
  // each write without a copy or a detour. `first` is true for the first attempt of a write and
  // false for the continuation after a short write or EINTR. The answer: submit `len` bytes (at
  // most what was asked; fewer simulates a short write), or, when `error` is not 0, do not
  // submit and complete the attempt with that errno (EINTR: retry). The default lets everything
  // through and costs a virtual call per attempt.
  struct WritePlan {
    size_t len = 0;
    int error = 0;
  };
  virtual WritePlan plan_write(uint64_t offset, size_t len, bool first) {
    (void)offset;
    (void)first;
    return {len, 0};
  }
  // After the kernel completed an attempt planned above: `result` is the byte count written or
  // -errno.
  virtual void write_completed(uint64_t offset, ssize_t result) {
    (void)offset;
    (void)result;
  }
};

// An exclusive advisory lock (flock(2)) on a lock file, released when the handle is destroyed.
// Advisory: it only keeps out other holders of the same lock, never readers or writers, and some
// network filesystems grant it to everyone, so callers use it to avoid duplicate work, never for
// correctness.
class FileLock {
 public:
  virtual ~FileLock() = default;
  virtual const fs::path& path() const = 0;
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
  bool is_regular_file = false;  // a plain file (false for a symlink under lstat)
  uint64_t size = 0;
  // Identity: two names of one file (hard links, or a link and its target under stat_target)
  // have the same device and inode. 0 where the Env has no such notion.
  uint64_t device = 0;
  uint64_t inode = 0;
};

// How lock_file() treats a lock file that does not exist yet.
enum class LockCreate : uint8_t {
  IfMissing,  // create it (0644), with its folder; the usual case for a dedicated lock file
  Never,      // only lock an existing file, without following a final symlink (the file is
              // someone's data, e.g. a temp file its writer holds the lock on)
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
  // Maps the file `file` already has open (the inode it preads from), without opening its path
  // again: a file replaced in between cannot be mixed in. The default maps file.fd(); a file
  // without a descriptor (an in-memory Env) is mapped through map_read(file.path()).
  virtual std::shared_ptr<const MappedFile> map_open_file(const ReadableFile& file);

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
  // stat(2): like stat() but follows symlinks, so a link is reported as what it points to and a
  // dangling one does not exist (is_symlink is always false). It answers "is there a regular file
  // (or a folder) behind this name", which readers that accept links need. The default resolves
  // the name with real_path() and stat()s the result.
  virtual FileInfo stat_target(const fs::path& path);

  // The absolute path with every symlink, "." and ".." resolved (realpath(3)); every component
  // must exist (Error NotFound otherwise, also for a dangling link). Readers use it to check that
  // a link stays inside a folder. The default returns the lexically normal absolute path (an Env
  // without symlinks).
  virtual fs::path real_path(const fs::path& path);
  // Creates the symlink `link` -> `target` (target stored as given, usually relative). A new name
  // like any other: durable only once its folder is synced. Fails with AlreadyExists when `link`
  // exists: callers that replace a link create it under a temp name and rename it. The default
  // throws Error(Unsupported).
  virtual void create_symlink(const fs::path& target, const fs::path& link);
  // The target stored in the symlink `link` (readlink(2)), as created. Error InvalidArgument
  // when `link` is not a symlink. The default throws Error(Unsupported).
  virtual fs::path read_symlink(const fs::path& link);

  // Takes the exclusive lock on `path` without waiting: a handle when it is ours, nullptr when
  // another holder (process or open file) has it. Throws Error when the file cannot be opened
  // (a read-only cache folder, LockCreate::Never on a missing file: NotFound). Waiting with a
  // bound is the caller's loop over this call (see lock_file_within), so that it can also stop
  // when the work the lock guards was done by the holder. The default (an Env without locks)
  // always grants it.
  virtual std::unique_ptr<FileLock> lock_file(const fs::path& path, LockCreate create);

  // Atomically swaps two existing paths (renameat2 RENAME_EXCHANGE), so that a committed folder
  // can replace an existing one without a moment where neither exists. Envs that cannot do it
  // throw Error(Unsupported); callers then fall back to remove + rename.
  virtual void exchange(const fs::path& a, const fs::path& b);
  // Opens an existing file for writing with O_DIRECT, for engines that write aligned blocks
  // around the page cache. nullptr when the Env or the filesystem does not support it (tmpfs,
  // fault injection): callers then write through the ordinary file.
  virtual std::unique_ptr<WritableFile> open_write_direct(const fs::path& path);

  // The process-wide POSIX implementation.
  static Env& posix();
};

// Polls env.lock_file(path, LockCreate::IfMissing) until it is ours, `give_up()` returns true
// (checked between attempts, e.g. "another process finished the work") or `max_wait` has passed:
// nullptr then. Errors opening the lock file propagate.
std::unique_ptr<FileLock> lock_file_within(Env& env, const fs::path& path,
                                           std::chrono::milliseconds max_wait,
                                           const std::function<bool()>& give_up);

// A random suffix for temp names, unique across processes and threads.
std::string random_suffix();

struct AtomicWriteOptions {
  // fsync the file before the rename and the folder after it. Off only where a caller asked for
  // no durability (tests, benchmarks, the Python package's save_file(sync=False)): the same temp
  // name and rename, so readers still never see a partial file.
  bool sync = true;
  // The temp file; empty: temp_path_for(path). Must be in the same folder as `path` and carry a
  // name is_temp_name() recognises. For writers whose leftovers need a name of their own.
  fs::path temp = {};
};

// The one temp-then-rename of a file: fill `<dir>/.<name>.tmp-<random>`, fsync it, rename it over
// `path`, fsync the directory. On any failure the temp file is removed and `path` is untouched.
// `fill` writes the content through the WritableFile it is given.
void write_file_atomic(Env& env, const fs::path& path,
                       const std::function<void(WritableFile&)>& fill,
                       const AtomicWriteOptions& options = {});
void write_file_atomic(Env& env, const fs::path& path, std::string_view contents,
                       const AtomicWriteOptions& options = {});

// mkdir -p that survives a power cut: a new folder's entry is durable only once its parent is
// fsynced, so every folder this creates is synced into its parent before it returns.
void create_dirs_synced(Env& env, const fs::path& dir);

// Reads a whole (small) file; refuses files over `max_bytes` with Error(Corrupt).
std::string read_small_file(Env& env, const fs::path& path, uint64_t max_bytes = 64u << 20);

// True for names write_file_atomic and the folder commit use for their temp files; owners use it
// to clean up after a crash.
bool is_temp_name(std::string_view name);

// `<dir>/.<name>.tmp-<random>` for `<dir>/<name>`: the temp name of an atomic commit.
fs::path temp_path_for(const fs::path& path);
// `<dir>/.<name>.replaced-<random>`: where a replace without RENAME_EXCHANGE keeps the old folder
// until the new one is durable. Not a temp name: it holds the only copy of the old version while
// the final name is empty.
fs::path replaced_path_for(const fs::path& path);
// "<name>" for ".<name>.replaced-<random>", nullopt for any other name.
std::optional<std::string> replaced_target(std::string_view name);

// What commit_folder does when the final name is already taken (by a folder; anything else is
// always Error(AlreadyExists)).
enum class IfExists : uint8_t {
  Fail,       // Error(AlreadyExists); nothing changes
  Replace,    // the new folder takes its place; the old one is deleted once the new one is durable
  MoveAside,  // the old folder moves to FolderCommitOptions::aside and stays there
};

struct FolderCommitOptions {
  IfExists if_exists = IfExists::Fail;
  // fsync every file in the folder before publishing it; false when whoever wrote them already
  // did. The folders themselves are fsynced either way (when `sync`).
  bool sync_files = true;
  // Make the commit durable (fsync the tree and the parent); off only for tests and benchmarks.
  bool sync = true;
  // Where the old folder goes for MoveAside (required) and for Replace where the filesystem has
  // no RENAME_EXCHANGE (empty: replaced_path_for(final)). Must be in the same parent folder.
  fs::path aside = {};
  // Told when the replaced old folder could not be deleted after a durable commit (the commit
  // still succeeded); nullptr: silent.
  std::function<void(const std::string&)> warn = nullptr;
};

// The one folder commit: publishes the complete folder `temp` under `final_path` (same parent).
// Without RENAME_EXCHANGE a replace renames the old folder aside, the new one in, fsyncs the
// parent, and only then deletes the old one. Until the parent fsync has succeeded every failure
// takes the new folder back to `temp` and puts the old one back, so a failed commit leaves the
// folder as it was; a crash between the two renames leaves the old version under its
// replaced_path_for name, which remove_temp_leftovers puts back.
void commit_folder(Env& env, const fs::path& temp, const fs::path& final_path,
                   const FolderCommitOptions& options = {});

// The crash-safe way to create or replace a folder (a sharded checkpoint): everything is written
// into `<parent>/.<name>.tmp-<random>/`, then commit() publishes it with commit_folder. A crash at
// any point leaves either no folder (or the old one) under the final name plus a temp folder that
// is_temp_name() recognises and remove_temp_leftovers() deletes.
//
// Not thread-safe; files inside may be written from any thread before commit().
class AtomicDir {
 public:
  // Creates the temp folder (and the parent, if missing). Throws Error naming the path.
  AtomicDir(Env& env, fs::path final_path);
  // Removes the temp folder unless commit() succeeded; errors are swallowed (a leftover is
  // cleaned later by remove_temp_leftovers).
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const fs::path& temp_path() const { return temp_; }
  const fs::path& final_path() const { return final_; }
  // temp_path() / name: where to write a file that will be published as final_path() / name.
  fs::path operator/(const fs::path& name) const { return temp_ / name; }

  // Publishes the folder with commit_folder(options). After a failure nothing is published and
  // the temp folder stays until destruction (a later commit may retry).
  void commit(const FolderCommitOptions& options = {});
  bool committed() const { return committed_; }

 private:
  Env& env_;
  fs::path final_;
  fs::path temp_;
  bool committed_ = false;
};

// Removes the leftovers of interrupted atomic commits in `dir`: entries whose names are temp
// names (files and folders). An old folder that an interrupted replace moved aside
// (replaced_path_for) is put back when its final name is empty, and deleted otherwise. With
// `name` non-empty only leftovers of `<dir>/<name>` are touched, so an owner never deletes
// another writer's temp files. Returns the names removed (not those put back). Call it only when
// no other process is committing the same names.
std::vector<std::string> remove_temp_leftovers(Env& env, const fs::path& dir,
                                               std::string_view name = {});

}  // namespace ckptio::io
