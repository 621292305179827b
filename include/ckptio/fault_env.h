// FaultInjectingEnv: an Env for tests that passes every call to a real Env (POSIX by default)
// until told to fail. It makes the failures real programs meet: the Nth write, fsync or rename
// failing with EIO or ENOSPC, short writes, EINTR, and a "crash" after which no I/O happens at
// all. Code under test must surface each of them as ckptio::Error with the right code and must
// never report success for bytes that did not reach the base Env.
//
// Every write backend is reachable: its files expose the base file's descriptor (fd()) and shape
// the attempts of engines that submit on it themselves (WritableFile::plan_write /
// write_completed), so io_uring submissions meet the same write faults, short writes, EINTR and
// crash as write_at; open_write_direct() hands out the base Env's O_DIRECT file behind the same
// faults (short writes stay block-aligned there).
//
// Thread-safe: the async writer calls it from several threads at once.
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ckptio/io.h"

namespace ckptio::io {

// The operations a fault can target. Each is counted per call, across all files of the Env.
enum class FaultOp : uint8_t {
  Open,      // open_read, open_write, open_write_direct, map_read, a read file's direct()
  Read,      // ReadableFile::read_exact
  Write,     // WritableFile::write_at, or an engine's write on fd() (one count per write, however
             // many attempts it takes)
  Truncate,  // WritableFile::truncate
  Sync,      // WritableFile::sync
  Close,     // WritableFile::close
  Rename,    // rename and exchange
  SyncDir,   // sync_dir
  Remove,    // remove and remove_all
  Mkdir,     // create_dirs
  Symlink,   // create_symlink
  Lock,      // lock_file (not a mutation: a crash_after budget does not count it)
};

struct Fault {
  FaultOp op = FaultOp::Write;
  // 1-based: the nth matching call from the moment the fault is injected fails.
  uint64_t nth = 1;
  // errno the call fails with (EIO, ENOSPC, EACCES, ...); it is mapped by ckptio::system_error.
  int error = EIO;
  // Only calls on paths whose string contains this count; empty matches every path.
  std::string path_contains;
  // Keep failing every matching call after the nth (a disk that stays full).
  bool sticky = false;
};

class FaultInjectingEnv final : public Env {
 public:
  // `base` must outlive this Env and every file it opened.
  explicit FaultInjectingEnv(Env& base = Env::posix());
  ~FaultInjectingEnv() override;

  // Arms a fault. Several may be armed; a call fails if any armed fault matches it.
  void inject(const Fault& fault);
  // The common case: the nth call of `op` on any path fails once with `error`.
  void inject(FaultOp op, uint64_t nth, int error = EIO);
  // From now on every write attempt moves at most `max_bytes` (0 = no limit), so writers must
  // keep going after short writes. The bytes that are moved really reach the base Env.
  void set_short_writes(size_t max_bytes);
  // Every `every`-th read or write attempt first fails with EINTR (0 = never); callers retry.
  void set_eintr_every(uint64_t every);
  // Simulated power cut: after `ops` more mutating calls (write, truncate, sync, close, rename,
  // sync_dir, remove, mkdir) succeed, every call of any kind fails with EIO and has no effect.
  void crash_after(uint64_t ops);
  // crash_after(0).
  void crash_now();
  bool crashed() const;
  // From now on exchange() fails as on a file system without RENAME_EXCHANGE: with `error` EINVAL
  // or ENOSYS it throws Error(Unsupported) like the POSIX Env does (callers fall back to renames);
  // other values fail like any injected fault. 0 lets exchange through again.
  void refuse_exchange(int error = EINVAL);
  // Disarms every fault, short writes, EINTR and the crash; counters keep counting.
  void clear();

  // Calls seen for `op` (including failed ones) since construction.
  uint64_t count(FaultOp op) const;
  // Faults that fired (including EINTR and short writes) since construction.
  uint64_t faults_fired() const;
  // Bytes the base Env accepted through write_at since construction.
  uint64_t bytes_written() const;

  std::unique_ptr<ReadableFile> open_read(const fs::path& path) override;
  std::unique_ptr<WritableFile> open_write(const fs::path& path, OpenMode mode) override;
  std::shared_ptr<const MappedFile> map_read(const fs::path& path) override;
  // Counts and fails as an Open, then maps the base Env's file.
  std::shared_ptr<const MappedFile> map_open_file(const ReadableFile& file) override;
  void rename(const fs::path& from, const fs::path& to) override;
  void sync_dir(const fs::path& dir) override;
  void remove(const fs::path& path) override;
  void remove_all(const fs::path& path) override;
  void create_dirs(const fs::path& path) override;
  std::vector<std::string> list_dir(const fs::path& dir) override;
  FileInfo stat(const fs::path& path) override;
  void exchange(const fs::path& a, const fs::path& b) override;
  // The base Env's O_DIRECT file behind the same faults (nullptr where the base has none).
  std::unique_ptr<WritableFile> open_write_direct(const fs::path& path) override;
  FileInfo stat_target(const fs::path& path) override;
  fs::path real_path(const fs::path& path) override;
  void create_symlink(const fs::path& target, const fs::path& link) override;
  fs::path read_symlink(const fs::path& link) override;
  std::unique_ptr<FileLock> lock_file(const fs::path& path, LockCreate create) override;

  // Used by the files this Env hands out; not for callers.
  struct State;

 private:
  Env& base_;
  std::shared_ptr<State> state_;
};

}  // namespace ckptio::io
