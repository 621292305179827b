// The power-cut model itself: unsynced bytes and unsynced directory entries do not survive, synced
// ones do, and a writer that leaves out one fsync is caught at some operation boundary.
#include "ckptio/power_cut_env.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>
#include <set>

#include "ckptio/error.h"
#include "support/power_cut_root.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::TempDir;
using testing::write_file;
using Names = PowerCutOptions::Names;
using Data = PowerCutOptions::Data;

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

void write_new(Env& env, const fs::path& p, std::string_view text, bool sync) {
  auto f = env.open_write(p, OpenMode::CreateNew);
  f->write_at(0, bytes_of(text));
  if (sync) f->sync();
  f->close();
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

TEST(PowerCutEnv, UnsyncedFileAndEntryAreLost) {
  TempDir dir;
  PowerCutEnv env(dir.path());
  write_new(env, dir / "a", "never synced", false);
  env.power_cut();
  EXPECT_TRUE(names_in(dir.path()).empty());
}

TEST(PowerCutEnv, SyncedFileWithoutFolderSyncIsLost) {
  TempDir dir;
  PowerCutEnv env(dir.path());
  write_new(env, dir / "a", "synced bytes", true);
  env.power_cut();
  EXPECT_FALSE(fs::exists(dir / "a"));
}

TEST(PowerCutEnv, FolderSyncWithoutFileSyncKeepsAnEmptyFile) {
  TempDir dir;
  PowerCutEnv env(dir.path());
  write_new(env, dir / "a", "bytes", false);
  env.sync_dir(dir.path());
  env.power_cut();
  ASSERT_TRUE(fs::exists(dir / "a"));
  EXPECT_EQ(read_file(dir / "a"), "");
}

TEST(PowerCutEnv, FileAndFolderSyncKeepTheFile) {
  TempDir dir;
  PowerCutEnv env(dir.path());
  write_new(env, dir / "a", "bytes", true);
  env.sync_dir(dir.path());
  {
    auto f = env.open_write(dir / "a", OpenMode::Existing);
    f->write_at(5, bytes_of(" and more"));  // after the sync: lost
    f->close();
  }
  env.power_cut();
  EXPECT_EQ(read_file(dir / "a"), "bytes");
}

TEST(PowerCutEnv, PreexistingContentIsDurable) {
  TempDir dir;
  fs::create_directories(dir / "sub");
  write_file(dir / "sub" / "old", "old");
  fs::create_symlink("sub/old", dir / "link");
  PowerCutEnv env(dir.path());
  env.power_cut();
  EXPECT_EQ(read_file(dir / "sub" / "old"), "old");
  EXPECT_EQ(fs::read_symlink(dir / "link"), "sub/old");
}

TEST(PowerCutEnv, UnsyncedRenameAndUnlinkAreRolledBack) {
  TempDir dir;
  write_file(dir / "old", "old");
  write_file(dir / "gone", "gone");
  PowerCutEnv env(dir.path());
  write_new(env, dir / "tmp", "new", true);
  env.rename(dir / "tmp", dir / "old");
  env.remove(dir / "gone");
  EXPECT_EQ(read_file(dir / "old"), "new");
  env.power_cut();
  EXPECT_EQ(names_in(dir.path()), (std::set<std::string>{"gone", "old"}));
  EXPECT_EQ(read_file(dir / "old"), "old");
  EXPECT_EQ(read_file(dir / "gone"), "gone");
}

TEST(PowerCutEnv, SyncedRenameCarriesTheSyncedBytes) {
  TempDir dir;
  write_file(dir / "old", "old");
  PowerCutEnv env(dir.path());
  write_new(env, dir / "tmp", "new", true);
  env.rename(dir / "tmp", dir / "old");
  env.sync_dir(dir.path());
  env.power_cut();
  EXPECT_EQ(names_in(dir.path()), (std::set<std::string>{"old"}));
  EXPECT_EQ(read_file(dir / "old"), "new");
}

TEST(PowerCutEnv, KeepNamesModeKeepsEntriesButNotBytes) {
  TempDir dir;
  write_file(dir / "old", "old");
  PowerCutEnv env(dir.path());
  write_new(env, dir / "tmp", "new", false);  // the classic bug: rename without fsync
  env.rename(dir / "tmp", dir / "old");
  env.power_cut({Names::Keep, Data::Drop});
  EXPECT_EQ(names_in(dir.path()), (std::set<std::string>{"old"}));
  EXPECT_EQ(read_file(dir / "old"), "");
}

TEST(PowerCutEnv, NewFolderNeedsItsParentSynced) {
  TempDir dir;
  PowerCutEnv env(dir.path());
  env.create_dirs(dir / "a" / "b");
  write_new(env, dir / "a" / "b" / "f", "x", true);
  env.sync_dir(dir / "a" / "b");
  env.sync_dir(dir / "a");
  env.power_cut();  // "a" itself was never made durable in the root
  EXPECT_TRUE(names_in(dir.path()).empty());

  env.create_dirs(dir / "a" / "b");
  write_new(env, dir / "a" / "b" / "f", "x", true);
  env.sync_dir(dir / "a" / "b");
  env.sync_dir(dir / "a");
  env.sync_dir(dir.path());
  env.power_cut();
  EXPECT_EQ(read_file(dir / "a" / "b" / "f"), "x");
}

TEST(PowerCutEnv, RenamedFolderKeepsItsSyncedEntries) {
  TempDir dir;
  PowerCutEnv env(dir.path());
  env.create_dirs(dir / ".t.tmp-1");
  write_new(env, dir / ".t.tmp-1" / "f", "x", true);
  env.sync_dir(dir / ".t.tmp-1");
  env.rename(dir / ".t.tmp-1", dir / "t");
  env.sync_dir(dir.path());
  env.power_cut();
  EXPECT_EQ(names_in(dir.path()), (std::set<std::string>{"t"}));
  EXPECT_EQ(read_file(dir / "t" / "f"), "x");
}

TEST(PowerCutEnv, ExchangeIsDurableOnlyAfterTheFolderSync) {
  TempDir dir;
  fs::create_directories(dir / "a");
  fs::create_directories(dir / "b");
  write_file(dir / "a" / "f", "A");
  write_file(dir / "b" / "f", "B");
  PowerCutEnv env(dir.path());
  env.exchange(dir / "a", dir / "b");
  env.power_cut();
  EXPECT_EQ(read_file(dir / "a" / "f"), "A");
  env.exchange(dir / "a", dir / "b");
  env.sync_dir(dir.path());
  env.power_cut();
  EXPECT_EQ(read_file(dir / "a" / "f"), "B");
}

TEST(PowerCutEnv, ReusedInodeNumberDoesNotInheritOldBytes) {
  TempDir dir;
  PowerCutEnv env(dir.path());
  for (int i = 0; i < 20; ++i) {
    write_new(env, dir / "a", "first", true);
    env.sync_dir(dir.path());
    env.remove(dir / "a");  // not synced: "a" with "first" is still durable
    write_new(env, dir / "b", "second", true);  // may get a's inode number
    env.power_cut();
    EXPECT_EQ(read_file(dir / "a"), "first");
    EXPECT_FALSE(fs::exists(dir / "b"));
    env.remove(dir / "a");
    env.sync_dir(dir.path());
  }
}

TEST(PowerCutEnv, TornPrefixKeepsSomePrefixOfUnsyncedBytes) {
  std::set<size_t> lengths;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    TempDir dir;
    write_file(dir / "f", "");
    PowerCutEnv env(dir.path());
    auto f = env.open_write(dir / "f", OpenMode::Existing);
    f->write_at(0, bytes_of("0123456789"));
    f->close();
    env.power_cut({Names::Rollback, Data::TornPrefix, seed});
    const std::string got = read_file(dir / "f");
    EXPECT_EQ(got, std::string("0123456789").substr(0, got.size()));
    lengths.insert(got.size());
  }
  EXPECT_GT(lengths.size(), 3u);  // not always all or nothing
}

TEST(PowerCutEnv, CutStopsEveryCallAndCountsOps) {
  TempDir dir;
  PowerCutEnv env(dir.path());
  env.cut_after(2);
  auto f = env.open_write(dir / "a", OpenMode::CreateNew);  // op 1
  f->write_at(0, bytes_of("x"));                              // op 2
  EXPECT_EQ(env.ops(), 2u);
  EXPECT_THROW(f->sync(), Error);
  EXPECT_TRUE(env.is_cut());
  EXPECT_THROW(env.stat(dir / "a"), Error);
  EXPECT_THROW(f->close(), Error);
  f.reset();
  env.power_cut();
  EXPECT_FALSE(env.is_cut());
  EXPECT_EQ(env.ops(), 0u);
  EXPECT_TRUE(names_in(dir.path()).empty());
}

// Drives `script` with the power cut after every op count and checks `check` on what survives.
// Returns the boundaries at which `check` failed.
std::vector<uint64_t> failing_boundaries(
    const std::function<void(Env&, const fs::path&)>& script, const PowerCutOptions& options,
    const std::function<bool(const fs::path&, bool)>& check) {
  uint64_t total = 0;
  {
    testing::PowerCutRoot dir;
    write_file(dir / "f", "old");
    PowerCutEnv env(dir.path());
    script(env, dir.path());
    total = env.ops();
  }
  std::vector<uint64_t> bad;
  for (uint64_t n = 0; n <= total; ++n) {
    testing::PowerCutRoot dir;
    write_file(dir / "f", "old");
    PowerCutEnv env(dir.path());
    env.cut_after(n);
    bool returned = false;
    try {
      script(env, dir.path());
      returned = true;
    } catch (const Error&) {
    }
    env.power_cut(options);
    if (!check(dir.path(), returned)) bad.push_back(n);
  }
  return bad;
}

// "f" holds "old" or "new", and "new" once the writer returned.
bool old_or_new(const fs::path& dir, bool returned) {
  if (!fs::exists(dir / "f")) return false;
  const std::string got = read_file(dir / "f");
  return returned ? got == "new" : (got == "old" || got == "new");
}

TEST(PowerCutEnv, WriteFileAtomicSurvivesEveryBoundary) {
  const auto script = [](Env& env, const fs::path& dir) { write_file_atomic(env, dir / "f", "new"); };
  for (const auto names : {Names::Rollback, Names::Keep}) {
    for (const auto data : {Data::Drop, Data::TornPrefix}) {
      EXPECT_TRUE(failing_boundaries(script, {names, data, 7}, old_or_new).empty());
    }
  }
}

// The same protocol with one fsync left out is caught, so the loops above have teeth.
TEST(PowerCutEnv, MissingFileSyncIsCaught) {
  const auto script = [](Env& env, const fs::path& dir) {
    write_new(env, dir / ".f.tmp-x", "new", /*sync=*/false);
    env.rename(dir / ".f.tmp-x", dir / "f");
    env.sync_dir(dir);
  };
  EXPECT_FALSE(failing_boundaries(script, {Names::Rollback, Data::Drop}, old_or_new).empty());
  EXPECT_FALSE(failing_boundaries(script, {Names::Keep, Data::Drop}, old_or_new).empty());
}

TEST(PowerCutEnv, MissingFolderSyncIsCaught) {
  const auto script = [](Env& env, const fs::path& dir) {
    write_new(env, dir / ".f.tmp-x", "new", true);
    env.rename(dir / ".f.tmp-x", dir / "f");
  };
  EXPECT_FALSE(failing_boundaries(script, {Names::Rollback, Data::Drop}, old_or_new).empty());
}

// AtomicDir into a parent that does not exist yet, then a replace: the folder holds the old or the
// new file set, never a mix, and the committed one once commit() returned.
TEST(PowerCutEnv, AtomicDirSurvivesEveryBoundary) {
  const auto script = [](Env& env, const fs::path& root, size_t& committed) {
    for (const std::string version : {"v1", "v2"}) {
      AtomicDir out(env, root / "runs" / "a" / "ckpt");
      write_new(env, out / "x", version + "x", true);
      env.create_dirs(out / "sub");
      write_new(env, out / "sub" / "y", version + "y", true);
      out.commit({.if_exists = IfExists::Replace});
      ++committed;
    }
  };
  const auto check = [](const fs::path& root, size_t committed) {
    const fs::path dir = root / "runs" / "a" / "ckpt";
    std::string got;
    if (fs::exists(dir)) {
      if (!fs::exists(dir / "x") || !fs::exists(dir / "sub" / "y")) return false;
      got = read_file(dir / "x");
      if (read_file(dir / "sub" / "y") != got.substr(0, 2) + "y") return false;
      got = got.substr(0, 2);
    }
    if (committed == 0) return got.empty() || got == "v1";
    if (committed == 1) return got == "v1" || got == "v2";
    return got == "v2";
  };
  uint64_t total = 0;
  {
    testing::PowerCutRoot dir;
    PowerCutEnv env(dir.path());
    size_t committed = 0;
    script(env, dir.path(), committed);
    total = env.ops();
  }
  for (const auto names : {Names::Rollback, Names::Keep}) {
    std::vector<uint64_t> bad;
    for (uint64_t n = 0; n <= total; ++n) {
      testing::PowerCutRoot dir;
      PowerCutEnv env(dir.path());
      env.cut_after(n);
      size_t committed = 0;
      try {
        script(env, dir.path(), committed);
      } catch (const Error&) {
      }
      env.power_cut({names, Data::Drop});
      if (!check(dir.path(), committed)) bad.push_back(n);
    }
    EXPECT_TRUE(bad.empty()) << "first failing boundary " << (bad.empty() ? 0 : bad.front())
                             << " of " << total;
  }
}

TEST(PowerCutEnv, RejectsRelativeRoot) {
  EXPECT_THROW(PowerCutEnv env("relative/dir"), Error);
}

// Engines that write to the descriptor themselves (io_uring) are inside the model: each write
// they plan is a counted operation, stopped by the cut, and its bytes survive only if synced.
TEST(PowerCutEnv, WritesOnTheDescriptorAreGatedAndLostUnlessSynced) {
  testing::PowerCutRoot dir;
  PowerCutEnv env(dir.path());
  auto f = env.open_write(dir / "f", OpenMode::CreateNew);
  env.sync_dir(dir.path());
  const int fd = f->fd();
  ASSERT_GE(fd, 0);
  const uint64_t before = env.ops();
  ASSERT_EQ(f->plan_write(0, 4, true).error, 0);
  ASSERT_EQ(::pwrite(fd, "sync", 4, 0), 4);
  f->sync();
  ASSERT_EQ(f->plan_write(4, 4, true).error, 0);
  ASSERT_EQ(::pwrite(fd, "lost", 4, 4), 4);
  EXPECT_EQ(env.ops(), before + 3);  // two writes and the sync
  env.cut_after(0);
  EXPECT_EQ(f->plan_write(8, 4, true).error, EIO);
  EXPECT_EQ(f->plan_write(8, 4, false).error, EIO);
  f.reset();
  env.power_cut();
  EXPECT_EQ(read_file(dir / "f"), "sync");
}

}  // namespace
}  // namespace ckptio::io
