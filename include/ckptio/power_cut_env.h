// PowerCutEnv: an Env for crash-consistency tests that knows what a power cut would keep.
//
// It passes every call to a real Env (POSIX by default) on a folder `root`, and on the side keeps
// the durable image of that folder, the way ALICE and the LevelDB/RocksDB fault-injection envs
// model a file system:
//   - a file's bytes become durable at WritableFile::sync(); bytes written after it are not;
//   - a directory's entries (creations, renames, exchanges, removals in it) become durable at
//     sync_dir() of that directory, not before; a new file or folder needs the fsync of its parent
//     to exist after the cut, and a renamed one keeps its old name until then.
// Files are followed by inode, so a file synced under a temp name and then renamed carries its
// synced bytes to the new name once the rename itself is durable.
//
// A test arms cut_after(n): the first n mutating calls (open for writing, write, truncate, sync,
// close, rename, exchange, sync_dir, remove, mkdir, symlink) run, then the power goes out and
// every call fails with EIO and has no effect. power_cut() then rewrites `root` on disk to what
// survived and "reboots": the Env passes calls through again, with the rewritten folder as the
// durable state.
// Counting ops in a dry run (ops()) and looping n over 0..count tests every operation boundary.
//
// The base Env's fsyncs are not called: the model alone decides what survives, and crash loops
// that replay a save hundreds of times stay fast.
//
// Every write backend is inside the model: files expose the real descriptor and gate each write
// an engine submits on it (WritableFile::plan_write), and open_write_direct() hands out the base
// Env's O_DIRECT file behind the same gate, so io_uring and O_DIRECT writes are counted, stopped
// by a cut and lost unless synced exactly like write_at's. create_symlink() makes a new entry
// (durable with its folder's sync, its target with it). A symlink created directly on disk
// (around the Env) is still picked up when it is renamed or its folder is synced.
//
// Thread-safe (calls are serialised); use one writer thread when the op order must be the same
// from run to run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "ckptio/io.h"

namespace ckptio::io {

struct PowerCutOptions {
  // What happens to directory entries (create, rename, exchange, unlink) that no fsync of their
  // folder made durable.
  enum class Names : uint8_t {
    Rollback,  // they are undone: each folder shows the entries of its last sync_dir
    Keep,      // they all survive (metadata journalled in order, data not: ext4 data=writeback)
  };
  // What happens to file bytes written after the file's last sync().
  enum class Data : uint8_t {
    Drop,        // lost: the file holds what it held at its last sync (empty if never synced)
    TornPrefix,  // a random prefix of the current bytes survives over the synced bytes
  };
  Names names = Names::Rollback;
  Data data = Data::Drop;
  uint64_t seed = 1;  // for TornPrefix
};

class PowerCutEnv final : public Env {
 public:
  // `root` must be an absolute path to an existing folder; everything in it now counts as
  // durable. Only paths inside `root` are modelled; calls outside it pass through uncounted.
  // `base` must outlive this Env and every file it opened.
  explicit PowerCutEnv(fs::path root, Env& base = Env::posix());
  ~PowerCutEnv() override;

  const fs::path& root() const;
  // After `ops` more mutating calls succeed, the power goes out.
  void cut_after(uint64_t ops);
  // True once the power is out (until power_cut() restores it).
  bool is_cut() const;
  // false: exchange() throws Error(Unsupported), like a filesystem without RENAME_EXCHANGE, so
  // that callers' fallback paths run under the model.
  void set_exchange_supported(bool supported);
  // Mutating calls that ran since construction (or since the last power_cut()).
  uint64_t ops() const;
  // Cuts the power now if it is still on, rewrites `root` to its durable image as `options`
  // describes, and turns the power back on with that image as the new durable state. Every file
  // this Env handed out must be closed or destroyed first.
  void power_cut(const PowerCutOptions& options = {});

  std::unique_ptr<ReadableFile> open_read(const fs::path& path) override;
  std::unique_ptr<WritableFile> open_write(const fs::path& path, OpenMode mode) override;
  std::shared_ptr<const MappedFile> map_read(const fs::path& path) override;
  void rename(const fs::path& from, const fs::path& to) override;
  void sync_dir(const fs::path& dir) override;
  void remove(const fs::path& path) override;
  void remove_all(const fs::path& path) override;
  void create_dirs(const fs::path& path) override;
  std::vector<std::string> list_dir(const fs::path& dir) override;
  FileInfo stat(const fs::path& path) override;
  void exchange(const fs::path& a, const fs::path& b) override;
  // The base Env's O_DIRECT file, gated like the others (nullptr where the base has none).
  std::unique_ptr<WritableFile> open_write_direct(const fs::path& path) override;
  FileInfo stat_target(const fs::path& path) override;
  fs::path real_path(const fs::path& path) override;
  void create_symlink(const fs::path& target, const fs::path& link) override;
  fs::path read_symlink(const fs::path& link) override;
  // Not a counted operation (a lock is not data); a lock file it creates is modelled as a new
  // entry.
  std::unique_ptr<FileLock> lock_file(const fs::path& path, LockCreate create) override;

  // Shared with the files this Env hands out; not for callers.
  struct Model;

 private:
  Env& base_;
  std::shared_ptr<Model> model_;
};

}  // namespace ckptio::io
