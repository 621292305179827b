// AtomicDir: a folder is published whole or not at all; leftovers are recognisable and removed.
#include <gtest/gtest.h>

#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/io.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

using ckptio::testing::read_file;
using ckptio::testing::TempDir;
using ckptio::testing::write_file;

TEST(AtomicDir, CommitPublishesEveryFile) {
  TempDir dir;
  Env& env = Env::posix();
  {
    AtomicDir out(env, dir / "ckpt");
    EXPECT_TRUE(is_temp_name(out.temp_path().filename().string()));
    EXPECT_FALSE(env.stat(dir / "ckpt").exists);
    write_file(out / "a.bin", "A");
    env.create_dirs(out / "sub");
    write_file(out / "sub" / "b.bin", "B");
    out.commit();
    EXPECT_TRUE(out.committed());
  }
  EXPECT_EQ(read_file(dir / "ckpt" / "a.bin"), "A");
  EXPECT_EQ(read_file(dir / "ckpt" / "sub" / "b.bin"), "B");
  EXPECT_EQ(env.list_dir(dir.path()), std::vector<std::string>{"ckpt"});
}

TEST(AtomicDir, AbandonedFolderIsRemoved) {
  TempDir dir;
  {
    AtomicDir out(Env::posix(), dir / "ckpt");
    write_file(out / "a.bin", "A");
  }
  EXPECT_TRUE(Env::posix().list_dir(dir.path()).empty());
}

TEST(AtomicDir, RefusesToReplaceUnlessAsked) {
  TempDir dir;
  Env& env = Env::posix();
  env.create_dirs(dir / "ckpt");
  write_file(dir / "ckpt" / "old.bin", "old");
  {
    AtomicDir out(env, dir / "ckpt");
    write_file(out / "new.bin", "new");
    try {
      out.commit();
      FAIL();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::AlreadyExists);
    }
    EXPECT_EQ(read_file(dir / "ckpt" / "old.bin"), "old");
    out.commit({.if_exists = IfExists::Replace});
  }
  EXPECT_EQ(env.list_dir(dir / "ckpt"), std::vector<std::string>{"new.bin"});
  EXPECT_EQ(env.list_dir(dir.path()), std::vector<std::string>{"ckpt"});
}

TEST(AtomicDir, FaultsBeforeRenamePublishNothing) {
  for (FaultOp op : {FaultOp::Sync, FaultOp::SyncDir, FaultOp::Rename}) {
    for (int error : {EIO, ENOSPC}) {
      SCOPED_TRACE(std::to_string(static_cast<int>(op)) + "/" + std::to_string(error));
      TempDir dir;
      FaultInjectingEnv env;
      {
        AtomicDir out(env, dir / "ckpt");
        write_file(out / "a.bin", "A");
        env.inject(op, 1, error);
        try {
          out.commit();
          FAIL() << "fault did not surface";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), error == ENOSPC ? ErrorCode::NoSpace : ErrorCode::IoError);
        }
        EXPECT_FALSE(Env::posix().stat(dir / "ckpt").exists);
      }
      // The destructor cleaned the temp folder.
      EXPECT_TRUE(Env::posix().list_dir(dir.path()).empty());
    }
  }
}

TEST(AtomicDir, CrashLeavesRecognisableLeftoverThatOwnerCleans) {
  TempDir dir;
  Env& posix = Env::posix();
  write_file(dir / "unrelated.txt", "keep");
  {
    FaultInjectingEnv env;
    AtomicDir out(env, dir / "ckpt");
    write_file(out / "a.bin", "A");
    env.crash_now();
    EXPECT_THROW(out.commit(), Error);
    // The destructor cannot remove anything after the crash either.
  }
  // A second, unrelated temp of another name must survive a name-filtered cleanup.
  posix.create_dirs(dir / ".other.tmp-abc");
  auto names = posix.list_dir(dir.path());
  ASSERT_EQ(names.size(), 3u);
  const auto removed = remove_temp_leftovers(posix, dir.path(), "ckpt");
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].rfind(".ckpt.tmp-", 0), 0u);
  EXPECT_EQ(posix.list_dir(dir.path()),
            (std::vector<std::string>{".other.tmp-abc", "unrelated.txt"}));
  EXPECT_EQ(remove_temp_leftovers(posix, dir.path()).size(), 1u);
  EXPECT_EQ(posix.list_dir(dir.path()), std::vector<std::string>{"unrelated.txt"});
}

TEST(AtomicDir, FailedReplaceKeepsTheOldFolder) {
  TempDir dir;
  Env& posix = Env::posix();
  posix.create_dirs(dir / "ckpt");
  write_file(dir / "ckpt" / "old.bin", "old");
  FaultInjectingEnv env;
  {
    AtomicDir out(env, dir / "ckpt");
    write_file(out / "new.bin", "new");
    env.inject(FaultOp::Rename, 1, EIO);
    EXPECT_THROW(out.commit({.if_exists = IfExists::Replace}), Error);
  }
  EXPECT_EQ(posix.list_dir(dir / "ckpt"), std::vector<std::string>{"old.bin"});
  EXPECT_EQ(posix.list_dir(dir.path()), std::vector<std::string>{"ckpt"});
}

TEST(AtomicDir, FsyncsEveryFileBeforeRename) {
  TempDir dir;
  FaultInjectingEnv env;
  AtomicDir out(env, dir / "ckpt");
  for (int i = 0; i < 5; ++i) write_file(out / ("f" + std::to_string(i)), "x");
  out.commit();
  EXPECT_EQ(env.count(FaultOp::Sync), 5u);
  EXPECT_GE(env.count(FaultOp::SyncDir), 2u);  // the folder and its parent
}

// Without RENAME_EXCHANGE a replace renames the old folder aside and the new one in; when the
// fsync of the parent then fails the commit is not durable, so both go back where they were.
TEST(AtomicDir, ReplaceWithoutExchangeTakesBothBackWhenTheParentSyncFails) {
  TempDir dir;
  Env& posix = Env::posix();
  posix.create_dirs(dir / "ckpt");
  write_file(dir / "ckpt" / "old.bin", "old");
  FaultInjectingEnv env;
  env.refuse_exchange();
  {
    AtomicDir out(env, dir / "ckpt");
    write_file(out / "new.bin", "new");
    // The tree sync fsyncs the temp folder first; the second folder fsync is the parent's.
    env.inject(FaultOp::SyncDir, 2, EIO);
    EXPECT_THROW(out.commit({.if_exists = IfExists::Replace}), Error);
    EXPECT_FALSE(out.committed());
    EXPECT_EQ(posix.list_dir(dir / "ckpt"), std::vector<std::string>{"old.bin"});
    EXPECT_EQ(read_file(out / "new.bin"), "new");  // back under the temp name: a retry works
    out.commit({.if_exists = IfExists::Replace});
  }
  EXPECT_EQ(posix.list_dir(dir / "ckpt"), std::vector<std::string>{"new.bin"});
  EXPECT_EQ(posix.list_dir(dir.path()), std::vector<std::string>{"ckpt"});
}

// A crash between the two renames of a replace leaves no folder under the final name and the old
// version under its replaced name: the owner's cleanup puts it back instead of deleting it.
TEST(AtomicDir, CrashBetweenTheRenamesOfAReplaceKeepsTheOldVersion) {
  TempDir dir;
  Env& posix = Env::posix();
  const fs::path aside = replaced_path_for(dir / "ckpt");
  EXPECT_EQ(replaced_target(aside.filename().string()), std::optional<std::string>("ckpt"));
  EXPECT_FALSE(is_temp_name(aside.filename().string()));
  posix.create_dirs(aside);
  write_file(aside / "old.bin", "old");
  posix.create_dirs(temp_path_for(dir / "ckpt"));  // the new folder, never renamed in
  remove_temp_leftovers(posix, dir.path(), "ckpt");
  EXPECT_EQ(posix.list_dir(dir.path()), std::vector<std::string>{"ckpt"});
  EXPECT_EQ(read_file(dir / "ckpt" / "old.bin"), "old");

  // Once the final name holds the new version, a replaced folder is debris.
  posix.create_dirs(aside);
  remove_temp_leftovers(posix, dir.path());
  EXPECT_EQ(posix.list_dir(dir.path()), std::vector<std::string>{"ckpt"});
}

// MoveAside keeps the old folder under the given name (a checkpoint that did not verify).
TEST(AtomicDir, MoveAsideKeepsTheOldFolder) {
  TempDir dir;
  Env& posix = Env::posix();
  posix.create_dirs(dir / "ckpt");
  write_file(dir / "ckpt" / "old.bin", "old");
  AtomicDir out(posix, dir / "ckpt");
  write_file(out / "new.bin", "new");
  out.commit({.if_exists = IfExists::MoveAside, .aside = dir / "ckpt.damaged-1"});
  EXPECT_EQ(read_file(dir / "ckpt" / "new.bin"), "new");
  EXPECT_EQ(read_file(dir / "ckpt.damaged-1" / "old.bin"), "old");
}

}  // namespace
}  // namespace ckptio::io
