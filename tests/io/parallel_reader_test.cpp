// read_parallel: every byte lands in its destination whatever the thread count and chunk size;
// a failing read is reported with its file and offset and no thread is left running.
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
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

// A file that records every read: which thread made it, its offset and length.
class RecordingFile final : public ReadableFile {
 public:
  explicit RecordingFile(const ReadableFile& base) : base_(base) {}
  const fs::path& path() const override { return base_.path(); }
  uint64_t size() const override { return base_.size(); }
  void read_exact(uint64_t offset, std::span<std::byte> dst) const override {
    {
      std::lock_guard lock(mu_);
      threads_.insert(std::this_thread::get_id());
      reads_.emplace(offset, dst.size());
    }
    base_.read_exact(offset, dst);
  }
  size_t thread_count() const {
    std::lock_guard lock(mu_);
    return threads_.size();
  }
  uint64_t calls() const {
    std::lock_guard lock(mu_);
    return reads_.size();
  }
  // (offset, bytes) of every read, in file order.
  std::multiset<std::pair<uint64_t, uint64_t>> reads() const {
    std::lock_guard lock(mu_);
    return reads_;
  }

 private:
  const ReadableFile& base_;
  mutable std::mutex mu_;
  mutable std::set<std::thread::id> threads_;
  mutable std::multiset<std::pair<uint64_t, uint64_t>> reads_;
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

// The read paths behind ReadPath: the O_DIRECT twin, copies out of cached pages, and the policy
// that picks between them and pread.
namespace ckptio::io {
namespace {

bool on_tmpfs(const fs::path& p) {
  struct statfs sfs {};
  return ::statfs(p.c_str(), &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

// `n` bytes whose address is `phase` bytes past a 4 KiB boundary.
struct PhasedBuffer {
  std::vector<std::byte> storage;
  std::span<std::byte> span;
  PhasedBuffer(size_t n, size_t phase) : storage(n + 2 * 4096) {
    const auto addr = reinterpret_cast<uintptr_t>(storage.data());
    const size_t skip = (4096 - addr % 4096) % 4096 + phase;
    span = std::span(storage.data() + skip, n);
  }
};

// Chunks end at file offsets that are multiples of the chunk size, wherever a range starts, so
// that neighbouring chunks never share a page (or a fresh huge page) of the destination.
TEST(ReadParallel, ChunksEndAtMultiplesOfTheChunkSizeInTheFile) {
  Fixture fx;
  auto fa = Env::posix().open_read(fx.dir / "a");
  RecordingFile recording(*fa);
  std::string out(20000, '\0');
  const std::vector<ReadRange> ranges = {
      {.file = &recording, .offset = 1000, .dst = std::as_writable_bytes(std::span(out.data(), 12000))},
      {.file = &recording, .offset = 50000, .dst = std::as_writable_bytes(std::span(out.data() + 12000, 8000))},
  };
  read_parallel(ranges, {.threads = 3, .chunk_bytes = 4096, .min_parallel_bytes = 0,
                         .path = ReadPath::Buffered});
  EXPECT_EQ(out, fx.a.substr(1000, 12000) + fx.a.substr(50000, 8000));
  const std::multiset<std::pair<uint64_t, uint64_t>> expected = {
      {1000, 3096}, {4096, 4096}, {8192, 4096}, {12288, 712},
      {50000, 3248}, {53248, 4096}, {57344, 656}};
  EXPECT_EQ(recording.reads(), expected);
}

// Tensors laid out in memory as in the file (read_all_owned) are read in full chunks, not one
// read per tensor; an error still names the tensors its chunk covered.
TEST(ReadParallel, RangesThatContinueEachOtherAreReadAsOneAndErrorsNameTheirTensors) {
  Fixture fx;
  auto fb = Env::posix().open_read(fx.dir / "b");
  RecordingFile recording(*fb);
  std::string out(8100, '\0');
  auto at = [&](size_t pos, size_t n) {
    return std::as_writable_bytes(std::span(out.data() + pos, n));
  };
  const std::vector<ReadRange> ranges = {
      {.file = &recording, .offset = 10, .dst = at(0, 3000), .tensor = "a"},
      {.file = &recording, .offset = 3010, .dst = at(3000, 5000), .tensor = "b"},
      {.file = &recording, .offset = 8010, .dst = at(8000, 100), .tensor = "c"},
  };
  EXPECT_EQ(read_parallel(ranges, {.threads = 2, .chunk_bytes = 8192, .min_parallel_bytes = 0}),
            8100u);
  EXPECT_EQ(out, fx.b.substr(10, 8100));
  EXPECT_EQ(recording.calls(), 1u);

  const uint64_t size = fx.b.size();
  std::string tail(3010, '\0');
  const std::vector<ReadRange> past_end = {
      {.file = fb.get(), .offset = size - 3000,
       .dst = std::as_writable_bytes(std::span(tail.data(), 3000)), .tensor = "x"},
      {.file = fb.get(), .offset = size,
       .dst = std::as_writable_bytes(std::span(tail.data() + 3000, 10)), .tensor = "y"},
  };
  try {
    read_parallel(past_end, {.threads = 2, .chunk_bytes = 8192, .min_parallel_bytes = 0});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_NE(e.message().find("tensors \"x\" .. \"y\""), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("at byte " + std::to_string(size)), std::string::npos) << e.message();
  }
}

TEST(DirectRead, ReadsAnyOffsetLengthAndMemoryPlacement) {
  Fixture fx;
  auto fa = Env::posix().open_read(fx.dir / "a");
  const ReadableFile* direct = fa->direct();
  if (direct == nullptr) GTEST_SKIP() << "no O_DIRECT on this filesystem";
  EXPECT_EQ(direct->size(), fx.a.size());
  const uint64_t size = fx.a.size();
  const std::vector<std::pair<uint64_t, size_t>> cases = {
      {0, 4096},          {0, 1},          {4095, 2},           {4096, 3 * 4096},
      {100, 5000},        {8191, 1 << 20}, {12288, (2 << 20) + 7}, {size - 333, 333},
      {size - 5000, 5000}, {0, size}};
  for (const auto& [offset, len] : cases) {
    // In phase with the file (straight into place), and out of phase (through the bounce).
    for (size_t phase : {static_cast<size_t>(offset % 4096), (offset + 8) % 4096}) {
      SCOPED_TRACE(std::to_string(offset) + "+" + std::to_string(len) + " phase " +
                   std::to_string(phase));
      PhasedBuffer buf(len, phase);
      direct->read_exact(offset, buf.span);
      ASSERT_EQ(std::memcmp(buf.span.data(), fx.a.data() + offset, len), 0);
    }
  }
  // Past the end: Corrupt naming the file and the first missing byte, as pread reports it.
  for (size_t phase : {size_t{0}, size_t{8}}) {
    PhasedBuffer buf(8192, phase);
    try {
      direct->read_exact(size - 4096, buf.span);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Corrupt);
      EXPECT_NE(e.message().find((fx.dir / "a").string()), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("at byte " + std::to_string(size)), std::string::npos)
          << e.message();
    }
  }
}

TEST(CachedRead, CopiesCachedBytesAndLeavesAShortenedFileToPread) {
  Fixture fx;
  auto fa = Env::posix().open_read(fx.dir / "a");  // just written: every page cached
  std::string out(size_t{3} << 20, '\0');
  const auto dst = std::as_writable_bytes(std::span(out.data(), out.size()));
  ASSERT_EQ(fa->read_if_cached(1000, dst), ReadableFile::CachedRead::Done);
  EXPECT_EQ(out, fx.a.substr(1000, out.size()));

  // Cut short after it was opened (the mapping still spans the old length): copying the missing
  // pages would raise SIGBUS, so the range goes to pread, which reports the missing bytes.
  ASSERT_EQ(::truncate((fx.dir / "a").c_str(), 1 << 20), 0);
  EXPECT_EQ(fa->read_if_cached(1000, dst), ReadableFile::CachedRead::Unknown);
  const ReadRange r{.file = fa.get(), .offset = 1000, .dst = dst};
  try {
    read_parallel({&r, 1}, {.threads = 2, .min_parallel_bytes = 0, .path = ReadPath::Auto,
                            .fast_path_min_bytes = 4096});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_NE(e.message().find("at byte " + std::to_string(1 << 20)), std::string::npos)
        << e.message();
  }
}

TEST(CachedRead, EvictedBytesAreNotCachedAndAutoStillReadsThemRight) {
  Fixture fx;
  if (on_tmpfs(fx.dir.path())) GTEST_SKIP() << "tmpfs pages cannot be evicted";
  const fs::path path = fx.dir / "a";
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::fdatasync(fd), 0);
    ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    ::close(fd);
  }
  auto fa = Env::posix().open_read(path);
  std::string out(fx.a.size(), '\0');
  const auto dst = std::as_writable_bytes(std::span(out.data(), out.size()));
  EXPECT_EQ(fa->read_if_cached(0, dst), ReadableFile::CachedRead::NotCached);
  const ReadRange r{.file = fa.get(), .dst = dst};
  read_parallel({&r, 1}, {.threads = 2, .min_parallel_bytes = 0});
  EXPECT_EQ(out, fx.a);
}

// A file that says its bytes are not cached and has a twin that counts what it reads.
class UncachedFile final : public ReadableFile {
 public:
  explicit UncachedFile(const ReadableFile& base, bool twin = true)
      : base_(base), twin_(twin ? std::make_unique<Twin>(base) : nullptr) {}
  const fs::path& path() const override { return base_.path(); }
  uint64_t size() const override { return base_.size(); }
  void read_exact(uint64_t offset, std::span<std::byte> dst) const override {
    buffered_ += dst.size();
    base_.read_exact(offset, dst);
  }
  CachedRead read_if_cached(uint64_t, std::span<std::byte>) const override {
    ++asked_;
    return CachedRead::NotCached;
  }
  const ReadableFile* direct() const override { return twin_.get(); }
  uint64_t buffered() const { return buffered_; }
  uint64_t direct_bytes() const { return twin_ ? twin_->bytes.load() : 0; }
  uint64_t asked() const { return asked_; }

 private:
  struct Twin final : ReadableFile {
    explicit Twin(const ReadableFile& b) : base(b) {}
    const fs::path& path() const override { return base.path(); }
    uint64_t size() const override { return base.size(); }
    void read_exact(uint64_t offset, std::span<std::byte> dst) const override {
      bytes += dst.size();
      base.read_exact(offset, dst);
    }
    const ReadableFile& base;
    mutable std::atomic<uint64_t> bytes{0};
  };
  const ReadableFile& base_;
  std::unique_ptr<Twin> twin_;
  mutable std::atomic<uint64_t> buffered_{0}, asked_{0};
};

TEST(ReadPathPolicy, AutoSendsBigUncachedChunksToTheDirectTwinAndSmallOnesToPread) {
  Fixture fx;
  auto fa = Env::posix().open_read(fx.dir / "a");
  std::string big(fx.a.size(), '\0'), small(100, '\0');
  const std::vector<ReadRange> ranges = {
      {.file = fa.get(), .offset = 0, .dst = std::as_writable_bytes(std::span(big.data(), big.size()))},
      {.file = fa.get(), .offset = 77, .dst = std::as_writable_bytes(std::span(small.data(), small.size()))},
  };
  const ParallelReadOptions base{.threads = 2, .chunk_bytes = size_t{1} << 20, .min_parallel_bytes = 0,
                                 .fast_path_min_bytes = 300};
  {
    UncachedFile file(*fa);
    std::vector<ReadRange> rs = ranges;
    rs[0].file = rs[1].file = &file;
    read_parallel(rs, base);
    EXPECT_EQ(big, fx.a);
    EXPECT_EQ(small, fx.a.substr(77, 100));
    EXPECT_EQ(file.direct_bytes(), fx.a.size());
    EXPECT_EQ(file.buffered(), 100u);  // below fast_path_min_bytes
  }
  {  // Buffered: neither asks nor uses the twin.
    UncachedFile file(*fa);
    std::vector<ReadRange> rs = ranges;
    rs[0].file = rs[1].file = &file;
    ParallelReadOptions o = base;
    o.path = ReadPath::Buffered;
    read_parallel(rs, o);
    EXPECT_EQ(big, fx.a);
    EXPECT_EQ(file.asked(), 0u);
    EXPECT_EQ(file.direct_bytes(), 0u);
    EXPECT_EQ(file.buffered(), fx.a.size() + 100);
  }
  {  // No twin (no O_DIRECT here): pread.
    UncachedFile file(*fa, /*twin=*/false);
    std::vector<ReadRange> rs = ranges;
    rs[0].file = &file;
    read_parallel({rs.data(), 1}, base);
    EXPECT_EQ(big, fx.a);
    EXPECT_EQ(file.buffered(), fx.a.size());
  }
}

TEST(ReadPathPolicy, DirectReadsMeetInjectedFaultsAndARefusedTwinFallsBackToPread) {
  Fixture fx;
  const ParallelReadOptions direct{.threads = 3, .chunk_bytes = 65536, .min_parallel_bytes = 0,
                                   .path = ReadPath::Direct};
  if (Env::posix().open_read(fx.dir / "a")->direct() == nullptr) {
    GTEST_SKIP() << "no O_DIRECT on this filesystem";
  }
  std::string out(fx.a.size(), '\0');
  const auto dst = std::as_writable_bytes(std::span(out.data(), out.size()));
  {  // An EIO inside the O_DIRECT reads surfaces with the file and the offset.
    FaultInjectingEnv env;
    auto fa = env.open_read(fx.dir / "a");
    const uint64_t opens = env.count(FaultOp::Open);
    env.inject(FaultOp::Read, 5, EIO);
    const ReadRange r{.file = fa.get(), .dst = dst};
    try {
      read_parallel({&r, 1}, direct);
      FAIL() << "fault not reported";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::IoError);
      EXPECT_NE(e.message().find("'" + (fx.dir / "a").string() + "' at byte"), std::string::npos)
          << e.message();
    }
    EXPECT_EQ(env.count(FaultOp::Open), opens + 1) << "the O_DIRECT twin is opened through the Env";
  }
  {  // EINTR on every other attempt: retried, every byte right.
    FaultInjectingEnv env;
    auto fa = env.open_read(fx.dir / "a");
    env.set_eintr_every(2);
    const ReadRange r{.file = fa.get(), .offset = 5, .dst = dst.first(dst.size() - 5)};
    read_parallel({&r, 1}, direct);
    EXPECT_EQ(out.substr(0, out.size() - 5), fx.a.substr(5));
    EXPECT_GT(env.faults_fired(), 0u);
  }
  {  // The twin refused (as on a filesystem without O_DIRECT): the same bytes through pread.
    FaultInjectingEnv env;
    auto fa = env.open_read(fx.dir / "a");
    env.inject(FaultOp::Open, 1, EINVAL);
    std::fill(out.begin(), out.end(), '\0');
    const ReadRange r{.file = fa.get(), .dst = dst};
    read_parallel({&r, 1}, direct);
    EXPECT_EQ(out, fx.a);
    EXPECT_EQ(fa->direct(), nullptr);
  }
}

}  // namespace
}  // namespace ckptio::io
