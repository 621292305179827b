// read_parallel: every byte lands in its destination whatever the thread count and chunk size;
// a failing read is reported with its file and offset and no thread is left running.
#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/parallel_reader.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

using ckptio::testing::TempDir;

int thread_count() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

std::string random_string(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  std::mt19937 rng(seed);
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

struct Fixture {
  TempDir dir;
  std::string a = random_string((size_t{5} << 20) + 333, 1);
  std::string b = random_string(777777, 2);
  Fixture() {
    ckptio::testing::write_file(dir / "a", a);
    ckptio::testing::write_file(dir / "b", b);
  }
};

TEST(ReadParallel, FillsEveryDestinationForAnyThreadCountAndChunk) {
  Fixture fx;
  Env& env = Env::posix();
  auto fa = env.open_read(fx.dir / "a");
  auto fb = env.open_read(fx.dir / "b");
  for (unsigned threads : {1u, 2u, 3u, 8u, 0u}) {
    for (size_t chunk : {size_t{4096}, size_t{100000}, size_t{8} << 20}) {
      SCOPED_TRACE(std::to_string(threads) + " threads, chunk " + std::to_string(chunk));
      // Ranges of different sizes from both files, including an empty one.
      std::string out1(fx.a.size() - 10, '\0'), out2(fx.b.size(), '\0'), out3(0, '\0'),
          out4(5000, '\0');
      const std::vector<ReadRequest> reqs = {
          {fa.get(), 10, std::as_writable_bytes(std::span(out1.data(), out1.size()))},
          {fb.get(), 0, std::as_writable_bytes(std::span(out2.data(), out2.size()))},
          {fb.get(), 5, std::as_writable_bytes(std::span(out3.data(), out3.size()))},
          {fa.get(), 4096, std::as_writable_bytes(std::span(out4.data(), out4.size()))},
      };
      read_parallel(reqs, {.threads = threads, .chunk_bytes = chunk, .min_parallel_bytes = 0});
      EXPECT_EQ(out1, fx.a.substr(10));
      EXPECT_EQ(out2, fx.b);
      EXPECT_EQ(out4, fx.a.substr(4096, 5000));
    }
  }
}

TEST(ReadParallel, ReadPastEndIsCorruptNamingFileAndOffset) {
  Fixture fx;
  auto fb = Env::posix().open_read(fx.dir / "b");
  std::string out(fx.b.size() + 1, '\0');
  const ReadRequest req{fb.get(), 0, std::as_writable_bytes(std::span(out.data(), out.size()))};
  try {
    read_parallel({&req, 1}, {.threads = 4, .chunk_bytes = 4096, .min_parallel_bytes = 0});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_NE(e.message().find(std::to_string(fx.b.size())), std::string::npos) << e.message();
  }
}

TEST(ReadParallel, InjectedFaultSurfacesAndThreadsAreJoined) {
  Fixture fx;
  FaultInjectingEnv env;
  auto fa = env.open_read(fx.dir / "a");
  env.inject(FaultOp::Read, 7, EIO);
  const int before = thread_count();
  std::string out(fx.a.size(), '\0');
  const ReadRequest req{fa.get(), 0, std::as_writable_bytes(std::span(out.data(), out.size()))};
  try {
    read_parallel({&req, 1}, {.threads = 4, .chunk_bytes = 65536, .min_parallel_bytes = 0});
    FAIL() << "fault not reported";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
    EXPECT_NE(e.message().find("'" + (fx.dir / "a").string() + "' at byte"), std::string::npos)
        << e.message();
  }
  EXPECT_EQ(thread_count(), before);
}

}  // namespace
}  // namespace ckptio::io

namespace ckptio::io {
namespace {

TEST(AllocateReadBuffer, LargeBuffersAreHugePageAlignedAndWritable) {
  for (size_t n : {size_t{0}, size_t{100}, (size_t{5} << 20) + 3}) {
    auto buf = allocate_read_buffer(n);
    ASSERT_NE(buf, nullptr);
    if (n >= (size_t{2} << 20)) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(buf.get()) % (size_t{2} << 20), 0u);
    }
    if (n > 0) {
      std::memset(buf.get(), 0xAB, n);
      EXPECT_EQ(buf.get()[n - 1], std::byte{0xAB});
    }
  }
}

// Loaders hold one buffer per large tensor and Linux caps a process's mappings (vm.max_map_count,
// 65530 by default), so a buffer must cost one mapping, not three (slack + aligned part split by
// the huge-page advice).
TEST(AllocateReadBuffer, EachLargeBufferCostsAtMostOneMapping) {
  const auto count_mappings = [] {
    const std::string maps = ckptio::testing::read_file("/proc/self/maps");
    return static_cast<size_t>(std::count(maps.begin(), maps.end(), '\n'));
  };
  constexpr size_t kBuffers = 200;
  std::vector<std::shared_ptr<std::byte>> buffers;
  const size_t before = count_mappings();
  for (size_t i = 0; i < kBuffers; ++i) {
    buffers.push_back(allocate_read_buffer((size_t{2} << 20) + 4096 * (i % 3) + 1));
    buffers.back().get()[0] = std::byte{1};
  }
  const size_t after = count_mappings();
  // Two or three per buffer is the bug; the margin is for the allocator's own mappings (ASan's
  // runtime adds a few).
  EXPECT_LE(after - before, kBuffers * 3 / 2) << before << " mappings before, " << after << " after";
}

}  // namespace
}  // namespace ckptio::io
