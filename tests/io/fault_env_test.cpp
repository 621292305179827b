// FaultInjectingEnv itself: faults fire exactly where armed, and pass-through is faithful.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "io/write_backends.h"
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

// Engines that submit on fd() themselves (io_uring) ask plan_write before each attempt: the
// first attempt of a write counts as a Write and meets the armed faults, every attempt meets
// EINTR and short writes, and completions count as bytes written.
TEST(FaultEnv, EnginesSubmittingOnTheDescriptorMeetTheSameFaults) {
  TempDir dir;
  FaultInjectingEnv env;
  auto f = env.open_write(dir / "f", OpenMode::CreateNew);
  ASSERT_GE(f->fd(), 0);  // the base file's descriptor, for zero-copy submission
  env.inject(FaultOp::Write, 2, ENOSPC);
  EXPECT_EQ(f->plan_write(0, 100, true).error, 0);
  EXPECT_EQ(f->plan_write(100, 100, true).error, ENOSPC);
  EXPECT_EQ(f->plan_write(100, 100, true).error, 0);  // not sticky
  EXPECT_EQ(env.count(FaultOp::Write), 3u);
  // Continuations are not new writes.
  EXPECT_EQ(f->plan_write(150, 50, false).error, 0);
  EXPECT_EQ(env.count(FaultOp::Write), 3u);

  env.set_short_writes(30);
  const WritableFile::WritePlan shortened = f->plan_write(0, 100, true);
  EXPECT_EQ(shortened.error, 0);
  EXPECT_EQ(shortened.len, 30u);
  env.set_short_writes(0);
  env.set_eintr_every(1);
  EXPECT_EQ(f->plan_write(0, 100, false).error, EINTR);
  env.set_eintr_every(0);

  f->write_completed(0, 30);
  f->write_completed(30, -EIO);
  EXPECT_EQ(env.bytes_written(), 30u);

  env.crash_now();
  EXPECT_EQ(f->plan_write(0, 100, true).error, EIO);
  EXPECT_EQ(f->plan_write(0, 100, false).error, EIO);
}

// O_DIRECT files come from the base Env behind the same faults; short writes stay whole blocks
// so that the kernel accepts them.
TEST(FaultEnv, DirectIoFilesAreFaultedToo) {
  ckptio::testing::DiskDir dir;
  if (!ckptio::testing::supports_direct_io(dir.path())) {
    GTEST_SKIP() << "the filesystem of " << dir.path() << " has no O_DIRECT";
  }
  FaultInjectingEnv env;
  env.open_write(dir / "f", OpenMode::CreateNew)->close();
  auto direct = env.open_write_direct(dir / "f");
  ASSERT_NE(direct, nullptr);
  EXPECT_GE(direct->fd(), 0);
  EXPECT_EQ(env.count(FaultOp::Open), 2u);

  void* raw = nullptr;
  ASSERT_EQ(::posix_memalign(&raw, 4096, 4 * 4096), 0);
  std::unique_ptr<void, decltype(&std::free)> mem(raw, &std::free);
  auto* block = static_cast<std::byte*>(raw);
  for (size_t i = 0; i < 4 * 4096; ++i) block[i] = static_cast<std::byte>(i * 7);
  env.set_short_writes(5000);  // rounded down to one block on the direct file
  direct->write_at(0, {block, 4 * 4096});
  EXPECT_EQ(env.bytes_written(), 4u * 4096);
  EXPECT_GE(env.faults_fired(), 3u);
  EXPECT_EQ(direct->plan_write(0, 4 * 4096, true).len, 4096u);
  env.set_short_writes(0);

  env.inject(FaultOp::Write, 1, EIO);
  try {
    direct->write_at(4096, {block, 4096});
    FAIL() << "the fault did not reach the O_DIRECT file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
    EXPECT_NE(e.message().find("at byte 4096"), std::string::npos) << e.message();
  }
  direct->close();
  EXPECT_EQ(ckptio::testing::read_file(dir / "f"),
            std::string(reinterpret_cast<const char*>(block), 4 * 4096));
  env.inject(FaultOp::Open, 1, EACCES);
  EXPECT_THROW(env.open_write_direct(dir / "f"), Error);
}

}  // namespace
}  // namespace ckptio::io
