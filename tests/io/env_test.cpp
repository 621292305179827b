// The POSIX Env and write_file_atomic on a real filesystem, and write_file_atomic under faults.
#include <gtest/gtest.h>

#include <string>

#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/io.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

using ckptio::testing::TempDir;

std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

TEST(PosixEnv, WriteReadRoundTripAtOffsets) {
  TempDir dir;
  Env& env = Env::posix();
  const fs::path p = dir / "f.bin";
  {
    auto f = env.open_write(p, OpenMode::CreateNew);
    f->write_at(10, as_bytes("world"));
    f->write_at(0, as_bytes("hello"));
    f->sync();
    f->close();
  }
  auto r = env.open_read(p);
  EXPECT_EQ(r->size(), 15u);
  std::string got(5, '\0');
  r->read_exact(10, std::as_writable_bytes(std::span(got.data(), got.size())));
  EXPECT_EQ(got, "world");
  // Past the end is Corrupt and names the file and offset.
  try {
    r->read_exact(12, std::as_writable_bytes(std::span(got.data(), got.size())));
    FAIL() << "read past end succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_NE(e.message().find("f.bin"), std::string::npos);
    EXPECT_NE(e.message().find("at byte 15"), std::string::npos) << e.message();
  }
}

TEST(PosixEnv, CreateNewRefusesExistingFile) {
  TempDir dir;
  ckptio::testing::write_file(dir / "x", "old");
  try {
    Env::posix().open_write(dir / "x", OpenMode::CreateNew);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::AlreadyExists);
  }
  EXPECT_EQ(ckptio::testing::read_file(dir / "x"), "old");
}

TEST(PosixEnv, ExchangeSwapsTwoFolders) {
  TempDir dir;
  Env& env = Env::posix();
  env.create_dirs(dir / "a");
  env.create_dirs(dir / "b");
  ckptio::testing::write_file(dir / "a" / "which", "a");
  ckptio::testing::write_file(dir / "b" / "which", "b");
  try {
    env.exchange(dir / "a", dir / "b");
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Unsupported) GTEST_SKIP() << "no RENAME_EXCHANGE here";
    throw;
  }
  EXPECT_EQ(ckptio::testing::read_file(dir / "a" / "which"), "b");
  EXPECT_EQ(ckptio::testing::read_file(dir / "b" / "which"), "a");
}

TEST(WriteFileAtomic, ReplacesContentAndLeavesNoTemp) {
  TempDir dir;
  ckptio::testing::write_file(dir / "c.json", "old old old old");
  write_file_atomic(Env::posix(), dir / "c.json", "new");
  EXPECT_EQ(ckptio::testing::read_file(dir / "c.json"), "new");
  EXPECT_EQ(Env::posix().list_dir(dir.path()), std::vector<std::string>{"c.json"});
}

// Every injected fault along the commit path leaves the old file untouched and no temp file.
TEST(WriteFileAtomic, EveryFaultKeepsOldFileAndCleansTemp) {
  struct Case {
    FaultOp op;
    int error;
    ErrorCode code;
  };
  const Case cases[] = {
      {FaultOp::Open, EACCES, ErrorCode::IoError},   {FaultOp::Write, EIO, ErrorCode::IoError},
      {FaultOp::Write, ENOSPC, ErrorCode::NoSpace},  {FaultOp::Sync, EIO, ErrorCode::IoError},
      {FaultOp::Sync, ENOSPC, ErrorCode::NoSpace},   {FaultOp::Close, EIO, ErrorCode::IoError},
      {FaultOp::Rename, EIO, ErrorCode::IoError},    {FaultOp::Rename, ENOSPC, ErrorCode::NoSpace},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(static_cast<int>(c.op));
    TempDir dir;
    ckptio::testing::write_file(dir / "c.json", "old");
    FaultInjectingEnv env;
    env.inject(c.op, 1, c.error);
    try {
      write_file_atomic(env, dir / "c.json", "new content");
      FAIL() << "fault did not surface";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), c.code) << e.what();
    }
    EXPECT_EQ(ckptio::testing::read_file(dir / "c.json"), "old");
    EXPECT_EQ(Env::posix().list_dir(dir.path()), std::vector<std::string>{"c.json"});
  }
}

TEST(WriteFileAtomic, SyncDirFaultIsReportedAfterRename) {
  TempDir dir;
  FaultInjectingEnv env;
  env.inject(FaultOp::SyncDir, 1, EIO);
  EXPECT_THROW(write_file_atomic(env, dir / "c.json", "new"), Error);
  // The rename happened but durability was not confirmed, so the caller was told it failed.
  EXPECT_EQ(env.count(FaultOp::SyncDir), 1u);
}

TEST(WriteFileAtomic, ShortWritesAndEintrStillWriteEverything) {
  TempDir dir;
  FaultInjectingEnv env;
  env.set_short_writes(7);
  env.set_eintr_every(3);
  std::string content;
  for (int i = 0; i < 1000; ++i) content += std::to_string(i) + ",";
  write_file_atomic(env, dir / "c.txt", content);
  EXPECT_EQ(ckptio::testing::read_file(dir / "c.txt"), content);
  EXPECT_GT(env.faults_fired(), 100u);
  EXPECT_EQ(env.bytes_written(), content.size());
}

TEST(ReadSmallFile, RefusesOversizedFile) {
  TempDir dir;
  ckptio::testing::write_file(dir / "big", std::string(100, 'x'));
  EXPECT_EQ(read_small_file(Env::posix(), dir / "big").size(), 100u);
  try {
    read_small_file(Env::posix(), dir / "big", 99);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
  }
}

TEST(TempNames, AreRecognisedAndUnique) {
  const fs::path t1 = temp_path_for("/x/model.safetensors");
  const fs::path t2 = temp_path_for("/x/model.safetensors");
  EXPECT_NE(t1, t2);
  EXPECT_EQ(t1.parent_path(), fs::path("/x"));
  EXPECT_TRUE(is_temp_name(t1.filename().string()));
  EXPECT_EQ(t1.filename().string().rfind(".model.safetensors.tmp-", 0), 0u);
  EXPECT_FALSE(is_temp_name("model.safetensors"));
  EXPECT_FALSE(is_temp_name(".hidden"));
}

}  // namespace
}  // namespace ckptio::io
