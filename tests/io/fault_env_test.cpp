// FaultInjectingEnv itself: faults fire exactly where armed, and pass-through is faithful.
#include <gtest/gtest.h>

#include <string>

#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

using ckptio::testing::TempDir;

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

TEST(FaultEnv, NthWriteFailsOnceWithGivenErrno) {
  TempDir dir;
  FaultInjectingEnv env;
  env.inject(FaultOp::Write, 2, ENOSPC);
  auto f = env.open_write(dir / "f", OpenMode::CreateNew);
  f->write_at(0, bytes_of("aa"));
  try {
    f->write_at(2, bytes_of("bb"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NoSpace);
    EXPECT_NE(e.message().find("at byte 2"), std::string::npos) << e.message();
  }
  f->write_at(2, bytes_of("cc"));  // not sticky
  f->close();
  EXPECT_EQ(ckptio::testing::read_file(dir / "f"), "aacc");
  EXPECT_EQ(env.count(FaultOp::Write), 3u);
  EXPECT_EQ(env.bytes_written(), 4u);
}

TEST(FaultEnv, StickyAndPathFilteredFaults) {
  TempDir dir;
  FaultInjectingEnv env;
  env.inject({.op = FaultOp::Sync, .nth = 1, .error = EIO, .path_contains = "bad", .sticky = true});
  auto good = env.open_write(dir / "good", OpenMode::CreateNew);
  auto bad = env.open_write(dir / "bad", OpenMode::CreateNew);
  good->sync();
  EXPECT_THROW(bad->sync(), Error);
  EXPECT_THROW(bad->sync(), Error);
  good->sync();
}

TEST(FaultEnv, CrashStopsAllIoFromThatPointOn) {
  TempDir dir;
  FaultInjectingEnv env;
  auto f = env.open_write(dir / "f", OpenMode::CreateNew);
  env.crash_after(2);
  f->write_at(0, bytes_of("one"));
  f->write_at(3, bytes_of("two"));
  EXPECT_FALSE(env.crashed());
  EXPECT_THROW(f->write_at(6, bytes_of("three")), Error);
  EXPECT_TRUE(env.crashed());
  EXPECT_THROW(f->sync(), Error);
  EXPECT_THROW(env.open_read(dir / "f"), Error);
  EXPECT_THROW(env.rename(dir / "f", dir / "g"), Error);
  EXPECT_EQ(ckptio::testing::read_file(dir / "f"), "onetwo");  // nothing after the crash
  env.clear();
  f->write_at(6, bytes_of("!"));
  f->close();
  EXPECT_EQ(ckptio::testing::read_file(dir / "f"), "onetwo!");
}

TEST(FaultEnv, ReadFaultsAndEintr) {
  TempDir dir;
  ckptio::testing::write_file(dir / "r", "0123456789");
  FaultInjectingEnv env;
  env.set_eintr_every(2);
  auto r = env.open_read(dir / "r");
  std::string out(10, '\0');
  r->read_exact(0, std::as_writable_bytes(std::span(out.data(), out.size())));
  EXPECT_EQ(out, "0123456789");
  env.inject(FaultOp::Read, 1, EIO);
  try {
    r->read_exact(4, std::as_writable_bytes(std::span(out.data(), 2)));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
    EXPECT_NE(e.message().find("at byte 4"), std::string::npos) << e.message();
  }
}

TEST(FaultEnv, NoDirectIo) {
  TempDir dir;
  FaultInjectingEnv env;
  env.open_write(dir / "f", OpenMode::CreateNew)->close();
  EXPECT_EQ(env.open_write_direct(dir / "f"), nullptr);
}

}  // namespace
}  // namespace ckptio::io
