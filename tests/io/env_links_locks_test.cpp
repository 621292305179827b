// The Env's probes, symlinks and locks on a real filesystem, and how the fault-injecting and
// power-cut Envs pass, fail and model them.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/io.h"
#include "ckptio/power_cut_env.h"
#include "support/power_cut_root.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

using ckptio::testing::TempDir;

TEST(PosixEnv, StatReportsRegularFilesAndStatTargetFollowsLinks) {
  TempDir dir;
  Env& env = Env::posix();
  ckptio::testing::write_file(dir / "f", "abc");
  env.create_dirs(dir / "d");
  env.create_symlink("f", dir / "to_f");
  env.create_symlink("d", dir / "to_d");
  env.create_symlink("missing", dir / "dangling");

  EXPECT_TRUE(env.stat(dir / "f").is_regular_file);
  EXPECT_FALSE(env.stat(dir / "d").is_regular_file);
  const FileInfo link = env.stat(dir / "to_f");
  EXPECT_TRUE(link.is_symlink);
  EXPECT_FALSE(link.is_regular_file);

  const FileInfo target = env.stat_target(dir / "to_f");
  EXPECT_TRUE(target.exists);
  EXPECT_TRUE(target.is_regular_file);
  EXPECT_FALSE(target.is_symlink);
  EXPECT_EQ(target.size, 3u);
  EXPECT_TRUE(env.stat_target(dir / "to_d").is_directory);
  EXPECT_TRUE(env.stat(dir / "dangling").exists);
  EXPECT_FALSE(env.stat_target(dir / "dangling").exists);
  EXPECT_FALSE(env.stat_target(dir / "nothing").exists);
}

TEST(PosixEnv, StatGivesTheFilesIdentity) {
  TempDir dir;
  Env& env = Env::posix();
  ckptio::testing::write_file(dir / "f", "abc");
  ckptio::testing::write_file(dir / "g", "abc");
  env.create_symlink("f", dir / "to_f");
  const FileInfo f = env.stat(dir / "f");
  EXPECT_NE(f.inode, 0u);
  const FileInfo via_link = env.stat_target(dir / "to_f");
  EXPECT_EQ(via_link.device, f.device);
  EXPECT_EQ(via_link.inode, f.inode);
  EXPECT_NE(env.stat(dir / "to_f").inode, f.inode);  // lstat: the link itself
  EXPECT_NE(env.stat(dir / "g").inode, f.inode);
}

TEST(PosixEnv, RealPathResolvesLinksAndDotDot) {
  TempDir dir;
  Env& env = Env::posix();
  env.create_dirs(dir / "a" / "b");
  ckptio::testing::write_file(dir / "a" / "b" / "f", "x");
  env.create_symlink("a/b", dir / "ab");
  const fs::path real = env.real_path(dir.path());
  EXPECT_EQ(env.real_path(dir / "ab" / "f"), real / "a" / "b" / "f");
  EXPECT_EQ(env.real_path(dir / "a" / "b" / ".." / "b" / "f"), real / "a" / "b" / "f");
  env.create_symlink("gone", dir / "dangling");
  try {
    env.real_path(dir / "dangling");
    FAIL() << "a dangling link resolved";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(e.message().find("dangling"), std::string::npos) << e.message();
  }
}

TEST(PosixEnv, SymlinkIsCreatedAsGivenAndNeverOverwrites) {
  TempDir dir;
  Env& env = Env::posix();
  env.create_symlink("../../blobs/abc", dir / "l");
  EXPECT_EQ(env.read_symlink(dir / "l"), fs::path("../../blobs/abc"));
  try {
    env.create_symlink("other", dir / "l");
    FAIL() << "an existing link was overwritten";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::AlreadyExists);
  }
  EXPECT_EQ(env.read_symlink(dir / "l"), fs::path("../../blobs/abc"));
  ckptio::testing::write_file(dir / "f", "x");
  try {
    env.read_symlink(dir / "f");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  }
  // A target longer than a first guess at the buffer comes back whole.
  const std::string long_target(1000, 'x');
  env.create_symlink(long_target, dir / "long");
  EXPECT_EQ(env.read_symlink(dir / "long").string(), long_target);
}

TEST(PosixEnv, LockIsExclusiveUntilTheHandleGoes) {
  TempDir dir;
  Env& env = Env::posix();
  const fs::path lock_path = dir / ".locks" / "repo" / "x.lock";  // folders are created
  auto first = env.lock_file(lock_path, LockCreate::IfMissing);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->path(), lock_path);
  EXPECT_TRUE(env.stat(lock_path).is_regular_file);
  // flock conflicts between open files even within one process: a second holder waits.
  EXPECT_EQ(env.lock_file(lock_path, LockCreate::IfMissing), nullptr);
  EXPECT_EQ(env.lock_file(lock_path, LockCreate::Never), nullptr);
  first.reset();
  auto second = env.lock_file(lock_path, LockCreate::Never);
  EXPECT_NE(second, nullptr);
}

TEST(PosixEnv, LockNeverCreatesOrFollowsWithLockCreateNever) {
  TempDir dir;
  Env& env = Env::posix();
  try {
    env.lock_file(dir / "missing", LockCreate::Never);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
  }
  EXPECT_FALSE(env.stat(dir / "missing").exists);
  ckptio::testing::write_file(dir / "f", "x");
  env.create_symlink("f", dir / "link");
  EXPECT_THROW(env.lock_file(dir / "link", LockCreate::Never), Error);
}

TEST(LockFileWithin, GivesUpWhenTheWorkIsDoneOrTheBoundPasses) {
  TempDir dir;
  Env& env = Env::posix();
  const fs::path p = dir / "w.lock";
  auto held = env.lock_file(p, LockCreate::IfMissing);
  ASSERT_NE(held, nullptr);
  int asked = 0;
  // give_up is consulted between attempts; here it says "done" on its third call.
  EXPECT_EQ(lock_file_within(env, p, std::chrono::hours(1), [&] { return ++asked == 3; }),
            nullptr);
  EXPECT_EQ(asked, 3);
  EXPECT_EQ(lock_file_within(env, p, std::chrono::milliseconds(0), nullptr), nullptr);
  held.reset();
  EXPECT_NE(lock_file_within(env, p, std::chrono::milliseconds(0), nullptr), nullptr);
}

TEST(FaultEnv, SymlinkAndLockFaultsFireAndCrashStopsThem) {
  TempDir dir;
  FaultInjectingEnv env;
  env.inject(FaultOp::Symlink, 1, ENOSPC);
  try {
    env.create_symlink("t", dir / "l");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NoSpace);
  }
  EXPECT_FALSE(env.stat(dir / "l").exists);
  env.create_symlink("t", dir / "l");
  EXPECT_EQ(env.read_symlink(dir / "l"), fs::path("t"));
  env.inject(FaultOp::Lock, 1, EACCES);
  EXPECT_THROW(env.lock_file(dir / "x.lock", LockCreate::IfMissing), Error);
  EXPECT_NE(env.lock_file(dir / "x.lock", LockCreate::IfMissing), nullptr);
  EXPECT_EQ(env.count(FaultOp::Symlink), 2u);
  EXPECT_EQ(env.count(FaultOp::Lock), 2u);
  env.crash_now();
  EXPECT_THROW(env.create_symlink("t", dir / "l2"), Error);
  EXPECT_THROW(env.real_path(dir.path()), Error);
  EXPECT_THROW(env.stat_target(dir / "l"), Error);
  EXPECT_FALSE(Env::posix().stat(dir / "l2").exists);
}

TEST(PowerCutEnvLinks, SymlinkSurvivesOnlyOnceItsFolderIsSynced) {
  testing::PowerCutRoot root;
  PowerCutEnv env(root.path());
  ckptio::testing::write_file(root / "blob", "data");
  env.sync_dir(root.path());
  env.create_symlink("blob", root / "unsynced");
  env.power_cut();
  EXPECT_FALSE(Env::posix().stat(root / "unsynced").exists);

  env.create_symlink("blob", root / "synced");
  env.sync_dir(root.path());
  const uint64_t ops = env.ops();
  EXPECT_EQ(ops, 2u);  // the symlink and the folder sync are counted operations
  env.power_cut();
  ASSERT_TRUE(Env::posix().stat(root / "synced").is_symlink);
  EXPECT_EQ(Env::posix().read_symlink(root / "synced"), fs::path("blob"));
  EXPECT_TRUE(Env::posix().stat_target(root / "synced").is_regular_file);
}

TEST(PowerCutEnvLinks, NothingAfterTheCutAndLocksAreNotOperations) {
  testing::PowerCutRoot root;
  PowerCutEnv env(root.path());
  {
    auto lock = env.lock_file(root / ".locks" / "a.lock", LockCreate::IfMissing);
    EXPECT_NE(lock, nullptr);
  }
  EXPECT_EQ(env.ops(), 0u);
  env.cut_after(0);
  EXPECT_THROW(env.create_symlink("x", root / "l"), Error);
  EXPECT_FALSE(Env::posix().stat(root / "l").exists);
  EXPECT_THROW(env.lock_file(root / "b.lock", LockCreate::IfMissing), Error);
  EXPECT_THROW(env.real_path(root.path()), Error);
  // The lock folder was never synced into root: it is gone after the cut.
  env.power_cut();
  EXPECT_FALSE(Env::posix().stat(root / ".locks").exists);
}

}  // namespace
}  // namespace ckptio::io
