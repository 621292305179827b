// Writes of more than 2 GiB land whole. Linux moves at most 0x7ffff000 bytes per write call, so a
// writer that trusts one pwrite (TensorNVMe's) silently truncates; ckptio's loops must not. The
// source is an anonymous mapping that is all zero pages except a few markers, so the test needs
// little memory. The POSIX test writes a real file (page cache, deleted afterwards); the async
// writer test records what reaches the file instead.
#include <sys/mman.h>
#include <sys/statvfs.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "ckptio/async_writer.h"
#include "ckptio/io.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

using ckptio::testing::TempDir;

constexpr size_t kSize = (size_t{2} << 30) + 3 * 4096 + 123;  // > 2 GiB, odd length
// Positions around the single-call limit and the ends.
constexpr size_t kMarks[] = {0, 0x7ffff000 - 8, 0x7ffff000, size_t{1} << 31, kSize - 8};

class BigSource {
 public:
  BigSource() {
    void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<std::byte*>(p);
    for (size_t i = 0; i < std::size(kMarks); ++i) {
      const uint64_t v = 0x1122334455667700ull + i;
      std::memcpy(data_ + kMarks[i], &v, 8);
    }
  }
  ~BigSource() { ::munmap(data_, kSize); }
  std::span<const std::byte> bytes() const { return {data_, kSize}; }

 private:
  std::byte* data_ = nullptr;
};

bool enough_disk(const fs::path& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return false;
  return uint64_t(st.f_bavail) * st.f_frsize > (uint64_t{8} << 30);
}

void expect_landed(const fs::path& p, uint64_t base) {
  auto f = Env::posix().open_read(p);
  ASSERT_EQ(f->size(), base + kSize);
  for (size_t i = 0; i < std::size(kMarks); ++i) {
    uint64_t v = 0;
    f->read_exact(base + kMarks[i], std::as_writable_bytes(std::span(&v, 1)));
    EXPECT_EQ(v, 0x1122334455667700ull + i) << "marker at " << kMarks[i];
  }
  uint64_t zero = 1;
  f->read_exact(base + (size_t{3} << 29), std::as_writable_bytes(std::span(&zero, 1)));
  EXPECT_EQ(zero, 0u);
}

TEST(LargeWrite, EnvWriteAtOverTwoGiBInOneCall) {
  TempDir dir;
  if (!enough_disk(dir.path())) GTEST_SKIP() << "needs 8 GiB free disk";
  BigSource src;
  const fs::path p = dir / "big.bin";
  auto f = Env::posix().open_write(p, OpenMode::CreateNew);
  f->write_at(0, src.bytes());
  f->close();
  expect_landed(p, 0);
}

// Records what reaches the file instead of storing it, so a > 2 GiB write at an offset past
// 4 GiB costs no disk: every range the writer hands down is kept, and the marker values are read
// where they land.
class RecordingFile final : public WritableFile {
 public:
  const fs::path& path() const override { return path_; }
  void write_at(uint64_t offset, std::span<const std::byte> src) override {
    std::lock_guard lock(mu_);
    ranges_.emplace_back(offset, src.size());
    for (size_t i = 0; i < std::size(kMarks); ++i) {
      const uint64_t at = base_ + kMarks[i];
      if (at >= offset && at + 8 <= offset + src.size()) {
        std::memcpy(&marks_[i], src.data() + (at - offset), 8);
      }
    }
  }
  void truncate(uint64_t) override {}
  void sync() override {}
  void close() override {}

  uint64_t base_ = 0;
  std::mutex mu_;
  std::vector<std::pair<uint64_t, size_t>> ranges_;
  uint64_t marks_[std::size(kMarks)] = {};

 private:
  fs::path path_ = "recording";
};

TEST(LargeWrite, AsyncWriterOverTwoGiBAtOffsetPastFourGiB) {
  BigSource src;
  RecordingFile file;
  file.base_ = (uint64_t{5} << 30) + 17;  // past 4 GiB, unaligned
  AsyncWriterOptions o;
  o.chunk_bytes = kMaxIoChunk;
  o.max_bytes_in_flight = uint64_t{4} << 30;
  AsyncWriter w(o);
  const auto id = w.attach(file);
  w.submit(id, file.base_, src.bytes());
  w.synchronize();
  EXPECT_EQ(w.bytes_written(), kSize);
  // The pieces tile [base, base + size) exactly, each within what one call may move.
  auto ranges = file.ranges_;
  std::sort(ranges.begin(), ranges.end());
  uint64_t next = file.base_;
  for (const auto& [off, len] : ranges) {
    EXPECT_EQ(off, next);
    EXPECT_LE(len, kMaxIoChunk);
    next = off + len;
  }
  EXPECT_EQ(next, file.base_ + kSize);
  for (size_t i = 0; i < std::size(kMarks); ++i) {
    EXPECT_EQ(file.marks_[i], 0x1122334455667700ull + i) << "marker at " << kMarks[i];
  }
}

}  // namespace
}  // namespace ckptio::io
