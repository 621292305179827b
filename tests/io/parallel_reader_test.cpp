// read_parallel: every byte lands in its destination whatever the thread count and chunk size;
// a failing read is reported with its file and offset and no thread is left running.
#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <random>
#include <string>
#include <vector>

#include "ckptio/dtype.h"
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
      const std::vector<ReadRange> reqs = {
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
  const ReadRange req{fb.get(), 0, std::as_writable_bytes(std::span(out.data(), out.size()))};
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
  const ReadRange req{fa.get(), 0, std::as_writable_bytes(std::span(out.data(), out.size()))};
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

// The same engine converts (file or memory sources) in bounded chunks: every element is what one
// convert_elements over the whole tensor gives, whatever the chunk size and thread count.
TEST(ReadParallel, ConvertsFromFilesAndMemoryInChunks) {
  TempDir dir;
  constexpr size_t kCount = 300001;  // not a multiple of any chunk
  std::vector<uint16_t> bf16(kCount);
  for (size_t i = 0; i < kCount; ++i) bf16[i] = f32_to_bf16(static_cast<float>(i) * 0.25f - 1000.f);
  const auto stored = std::as_bytes(std::span(bf16));
  std::string header(123, 'h');  // the tensor starts at an odd offset
  ckptio::testing::write_file(dir / "t", header + std::string(reinterpret_cast<const char*>(stored.data()),
                                                            stored.size()));
  std::vector<float> want(kCount);
  convert_elements(DType::BF16, bf16.data(), DType::F32, want.data(), kCount);
  auto file = Env::posix().open_read(dir / "t");
  for (unsigned threads : {1u, 3u}) {
    for (size_t chunk : {size_t{4096}, size_t{8} << 20}) {
      SCOPED_TRACE(std::to_string(threads) + " threads, chunk " + std::to_string(chunk));
      std::vector<float> from_file(kCount, -1.f), from_memory(kCount, -1.f);
      std::vector<std::byte> copied(stored.size());
      const std::vector<ReadRange> ranges = {
          {.file = file.get(), .offset = header.size(), .dst = std::as_writable_bytes(std::span(from_file)),
           .from = DType::BF16, .to = DType::F32, .tensor = "w"},
          {.dst = std::as_writable_bytes(std::span(from_memory)), .src = stored, .from = DType::BF16,
           .to = DType::F32, .tensor = "m"},
          {.dst = copied, .src = stored, .tensor = "raw"},
      };
      const uint64_t read = read_parallel(ranges, {.threads = threads, .chunk_bytes = chunk,
                                                   .min_parallel_bytes = 0});
      EXPECT_EQ(read, 3 * stored.size());
      EXPECT_EQ(from_file, want);
      EXPECT_EQ(from_memory, want);
      EXPECT_TRUE(std::equal(copied.begin(), copied.end(), stored.begin()));
    }
  }
}

TEST(ReadParallel, ErrorsNameTheFileTheOffsetAndTheTensor) {
  Fixture fx;
  auto fb = Env::posix().open_read(fx.dir / "b");
  std::string ok(100, '\0'), out(fx.b.size(), '\0');
  const std::vector<ReadRange> ranges = {
      {.file = fb.get(), .offset = 0, .dst = std::as_writable_bytes(std::span(ok.data(), ok.size())),
       .tensor = "fine"},
      {.file = fb.get(), .offset = 10, .dst = std::as_writable_bytes(std::span(out.data(), out.size())),
       .tensor = "layers.0.weight"},
  };
  try {
    read_parallel(ranges, {.threads = 2, .chunk_bytes = 4096, .min_parallel_bytes = 0});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_NE(e.message().find("tensor \"layers.0.weight\""), std::string::npos) << e.message();
    EXPECT_NE(e.message().find((fx.dir / "b").string()), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("byte"), std::string::npos) << e.message();
  }
  // A conversion the engine cannot do is refused before anything is read.
  ASSERT_FALSE(can_convert(DType::I32, DType::F32));
  std::vector<float> dst(4, -1.f);
  const ReadRange bad{.file = fb.get(), .dst = std::as_writable_bytes(std::span(dst)),
                      .from = DType::I32, .to = DType::F32, .tensor = "ids"};
  try {
    read_parallel({&bad, 1});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Mismatch);
    EXPECT_NE(e.message().find("tensor \"ids\""), std::string::npos) << e.message();
  }
  EXPECT_EQ(dst[0], -1.f);
}

// A file that records which threads read it.
class RecordingFile final : public ReadableFile {
 public:
  explicit RecordingFile(const ReadableFile& base) : base_(base) {}
  const fs::path& path() const override { return base_.path(); }
  uint64_t size() const override { return base_.size(); }
  void read_exact(uint64_t offset, std::span<std::byte> dst) const override {
    {
      std::lock_guard lock(mu_);
      threads_.insert(std::this_thread::get_id());
    }
    base_.read_exact(offset, dst);
  }
  size_t thread_count() const {
    std::lock_guard lock(mu_);
    return threads_.size();
  }

 private:
  const ReadableFile& base_;
  mutable std::mutex mu_;
  mutable std::set<std::thread::id> threads_;
};

// threads = 0 means the one knob: CKPTIO_THREADS bounds the reader threads.
TEST(ReadParallel, DefaultThreadsFollowCkptioThreads) {
  Fixture fx;
  auto fa = Env::posix().open_read(fx.dir / "a");
  const char* old = std::getenv("CKPTIO_THREADS");
  const std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
  for (const char* knob : {"1", "2"}) {
    SCOPED_TRACE(knob);
    ::setenv("CKPTIO_THREADS", knob, 1);
    RecordingFile recording(*fa);
    std::string out(fx.a.size(), '\0');
    const ReadRange r{.file = &recording, .dst = std::as_writable_bytes(std::span(out.data(), out.size()))};
    read_parallel({&r, 1}, {.threads = 0, .chunk_bytes = 4096, .min_parallel_bytes = 0});
    EXPECT_EQ(out, fx.a);
    EXPECT_GE(recording.thread_count(), 1u);
    EXPECT_LE(recording.thread_count(), static_cast<size_t>(std::stoi(knob)));
  }
  if (saved) {
    ::setenv("CKPTIO_THREADS", saved->c_str(), 1);
  } else {
    ::unsetenv("CKPTIO_THREADS");
  }
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
