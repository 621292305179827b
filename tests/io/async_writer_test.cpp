// AsyncWriter: bytes land whole from many producers on every backend; every injected fault
// surfaces from synchronize() with its code, file and offset; nothing unwritten is counted as
// written; the in-flight bound holds; no thread outlives the writer.
#include <dirent.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <cstring>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "core/thread_start.h"
#include "io/write_backends.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

using ckptio::testing::DiskDir;
using ckptio::testing::expect_backend_ran;
using ckptio::testing::read_file;
using ckptio::testing::TempDir;
using ckptio::testing::WriteBackendCase;

int thread_count() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
  }
  return n;
}

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

std::string as_string(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

struct Config {
  WriteBackend backend;
  bool direct;
  bool copy;
};

std::string config_name(const ::testing::TestParamInfo<Config>& info) {
  return std::string(write_backend_name(info.param.backend)) + (info.param.direct ? "_direct" : "") +
         (info.param.copy ? "_copy" : "_borrow");
}

class AsyncWriterRoundTrip : public ::testing::TestWithParam<Config> {};

// Four producers write interleaved pieces of odd sizes at odd offsets into two files.
TEST_P(AsyncWriterRoundTrip, ManyProducersBytesLandWhole) {
  const Config cfg = GetParam();
  TempDir dir;
  const size_t size = (size_t{3} << 20) + 12345;
  const auto a = random_bytes(size, 1);
  const auto b = random_bytes(size / 2 + 777, 2);
  const int threads_before = thread_count();
  {
    AsyncWriterOptions o;
    o.backend = cfg.backend;
    o.direct_io = cfg.direct;
    o.threads = 3;
    o.chunk_bytes = 64 << 10;
    o.max_bytes_in_flight = 256 << 10;
    AsyncWriter w(o);
    EXPECT_EQ(w.backend(), cfg.backend == WriteBackend::IoUring && io_uring_available()
                               ? WriteBackend::IoUring
                               : WriteBackend::Pwrite);
    const auto fa = w.open(dir / "a.bin", OpenMode::CreateNew);
    const auto fb = w.open(dir / "b.bin", OpenMode::CreateNew);
    struct statfs sfs {};
    ASSERT_EQ(::statfs(dir.path().c_str(), &sfs), 0);
    // tmpfs has no O_DIRECT; everywhere else the direct path must really be taken.
    EXPECT_EQ(w.uses_direct_io(fa), cfg.direct && sfs.f_type != TMPFS_MAGIC);
    std::vector<std::thread> producers;
    for (int p = 0; p < 4; ++p) {
      producers.emplace_back([&, p] {
        // Producer p writes every 4th piece; piece sizes vary so offsets are unaligned.
        for (const auto& [id, data] : {std::pair{fa, &a}, std::pair{fb, &b}}) {
          size_t off = 0;
          for (int piece = 0; off < data->size(); ++piece) {
            const size_t n = std::min<size_t>(data->size() - off, 10000 + 4096 * (piece % 7));
            if (piece % 4 == p) {
              const std::span<const std::byte> s(data->data() + off, n);
              if (cfg.copy) {
                w.submit_copy(id, off, s);
              } else {
                w.submit(id, off, s);
              }
            }
            off += n;
          }
        }
      });
    }
    for (auto& t : producers) t.join();
    w.synchronize();
    EXPECT_EQ(w.bytes_written(), a.size() + b.size());
    EXPECT_EQ(w.bytes_in_flight(), 0u);
    EXPECT_LE(w.peak_bytes_in_flight(), 256u << 10);
    w.close(fa);
    w.close(fb);
  }
  EXPECT_EQ(read_file(dir / "a.bin"), as_string(a));
  EXPECT_EQ(read_file(dir / "b.bin"), as_string(b));
  EXPECT_EQ(thread_count(), threads_before);
}

INSTANTIATE_TEST_SUITE_P(Backends, AsyncWriterRoundTrip,
                         ::testing::Values(Config{WriteBackend::Pwrite, false, false},
                                           Config{WriteBackend::Pwrite, false, true},
                                           Config{WriteBackend::Pwrite, true, false},
                                           Config{WriteBackend::Pwrite, true, true},
                                           Config{WriteBackend::IoUring, false, false},
                                           Config{WriteBackend::IoUring, false, true},
                                           Config{WriteBackend::IoUring, true, false}),
                         config_name);

TEST(AsyncWriter, DirectIoWithAlignedSourceSkipsStagingAndStaysCorrect) {
  TempDir dir;
  // 4 KiB-aligned source and offsets: the middle goes straight from the caller's memory.
  const size_t size = (size_t{1} << 20) + 100;
  std::vector<std::byte> raw(size + 4096);
  auto* base = reinterpret_cast<std::byte*>(
      (reinterpret_cast<uintptr_t>(raw.data()) + 4095) & ~uintptr_t{4095});
  const auto data = random_bytes(size, 9);
  std::memcpy(base, data.data(), size);
  AsyncWriterOptions o;
  o.direct_io = true;
  o.chunk_bytes = 256 << 10;
  AsyncWriter w(o);
  const auto f = w.open(dir / "d.bin", OpenMode::CreateNew);
  struct statfs sfs {};
  ASSERT_EQ(::statfs(dir.path().c_str(), &sfs), 0);
  EXPECT_EQ(w.uses_direct_io(f), sfs.f_type != TMPFS_MAGIC);
  w.submit(f, 8192, {base, size});
  w.submit(f, 0, {data.data(), 8192});
  w.close(f);
  std::string expect = as_string({data.data(), 8192}) + as_string({data.data(), size});
  EXPECT_EQ(read_file(dir / "d.bin"), expect);
}

// A machine out of threads still saves: with no worker thread, each chunk is written by the
// thread that submits it, errors and all.
TEST(AsyncWriter, WritesOnTheCallersThreadWhenNoWorkerStarts) {
  TempDir dir;
  set_thread_factory_for_testing([](std::function<void()>) -> std::thread {
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                            "thread");
  });
  const auto data = random_bytes(size_t{3} << 20, 5);
  try {
    AsyncWriterOptions o;
    o.threads = 4;
    o.chunk_bytes = 256 << 10;
    AsyncWriter w(o);
    const auto f = w.open(dir / "inline.bin", OpenMode::CreateNew);
    w.submit(f, 0, {data.data(), data.size()});
    w.close(f);
  } catch (...) {
    set_thread_factory_for_testing({});
    throw;
  }
  set_thread_factory_for_testing({});
  EXPECT_EQ(read_file(dir / "inline.bin"), as_string({data.data(), data.size()}));
}

// Forwards to POSIX. Writes wait at a gate the test opens, and each write samples a probe (the
// writer's own accounting) as it starts: the bound is checked at every event that can move it,
// with no thread spinning to catch a moment.
class GatedEnv final : public Env {
 public:
  std::function<void()> on_write;

  void open_gate() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

  std::unique_ptr<WritableFile> open_write(const fs::path& path, OpenMode mode) override {
    return std::make_unique<File>(base().open_write(path, mode), *this);
  }
  std::unique_ptr<ReadableFile> open_read(const fs::path& path) override { return base().open_read(path); }
  std::shared_ptr<const MappedFile> map_read(const fs::path& path) override { return base().map_read(path); }
  void rename(const fs::path& from, const fs::path& to) override { base().rename(from, to); }
  void sync_dir(const fs::path& dir) override { base().sync_dir(dir); }
  void remove(const fs::path& path) override { base().remove(path); }
  void remove_all(const fs::path& path) override { base().remove_all(path); }
  void create_dirs(const fs::path& path) override { base().create_dirs(path); }
  std::vector<std::string> list_dir(const fs::path& dir) override { return base().list_dir(dir); }
  FileInfo stat(const fs::path& path) override { return base().stat(path); }

 private:
  class File final : public WritableFile {
   public:
    File(std::unique_ptr<WritableFile> base, GatedEnv& env) : base_(std::move(base)), env_(env) {}
    const fs::path& path() const override { return base_->path(); }
    void write_at(uint64_t offset, std::span<const std::byte> src) override {
      env_.pass_gate();
      base_->write_at(offset, src);
    }
    void truncate(uint64_t size) override { base_->truncate(size); }
    void sync() override { base_->sync(); }
    void close() override { base_->close(); }

   private:
    std::unique_ptr<WritableFile> base_;
    GatedEnv& env_;
  };

  void pass_gate() {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return open_; });
    }
    if (on_write) on_write();
  }
  static Env& base() { return Env::posix(); }
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

TEST(AsyncWriter, InFlightBytesNeverExceedTheBound) {
  constexpr uint64_t kBound = 16384;
  TempDir dir;
  GatedEnv env;
  AsyncWriterOptions o;
  o.env = &env;
  o.threads = 2;
  o.chunk_bytes = 4096;
  o.max_bytes_in_flight = kBound;
  AsyncWriter w(o);
  std::atomic<uint64_t> worst{0};
  const auto sample = [&] {
    const uint64_t now = w.bytes_in_flight();
    uint64_t seen = worst.load();
    while (now > seen && !worst.compare_exchange_weak(seen, now)) {
    }
  };
  env.on_write = sample;
  const auto f = w.open(dir / "x", OpenMode::CreateNew);
  const auto data = random_bytes(1 << 20, 3);
  const auto submit = [&](size_t off) {
    w.submit_copy(f, off, {data.data() + off, std::min<size_t>(5000, data.size() - off)});
    sample();
  };

  // With every write held at the gate, three 5000-byte copies fit (15000 bytes in flight) ...
  for (size_t off : {0, 5000, 10000}) submit(off);
  EXPECT_EQ(w.bytes_in_flight(), 15000u);
  // ... and a fourth cannot all fit: it stays blocked until writes complete.
  std::atomic<bool> fourth_returned{false};
  std::thread fourth([&] {
    submit(15000);
    fourth_returned = true;
  });
  EXPECT_LE(w.bytes_in_flight(), kBound);
  EXPECT_FALSE(fourth_returned.load());
  env.open_gate();
  fourth.join();

  // Then many producers against the bound.
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&, p] {
      for (size_t off = 20000 + static_cast<size_t>(p) * 5000; off < data.size(); off += 20000) submit(off);
    });
  }
  for (auto& t : producers) t.join();
  w.synchronize();
  EXPECT_LE(worst.load(), kBound);
  EXPECT_LE(w.peak_bytes_in_flight(), kBound);
  EXPECT_GE(w.peak_bytes_in_flight(), 15000u);  // the bound was actually reached for
  const std::string got = read_file(dir / "x");
  ASSERT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == as_string(data));
}

struct FaultCase {
  FaultOp op;
  int error;
  ErrorCode code;
};

// Every fault test runs over every backend (pwrite, io_uring, O_DIRECT with each), on a folder
// where O_DIRECT works, and checks that the backend asked for is the one that wrote: the fault
// Env reaches io_uring submissions and O_DIRECT writes themselves, not a fallback to write_at.
class AsyncWriterFaults
    : public ::testing::TestWithParam<std::tuple<FaultCase, WriteBackendCase>> {};

// One writer thread and 64 KiB chunks make the failing write's offset predictable.
TEST_P(AsyncWriterFaults, SurfaceFromSynchronizeWithCodeFileAndOffset) {
  const auto [fc, bc] = GetParam();
  DiskDir dir;
  CKPTIO_SKIP_UNLESS_BACKEND(bc, dir.path());
  FaultInjectingEnv env;
  const int threads_before = thread_count();
  const auto data = random_bytes(1 << 20, 4);
  std::vector<Error> uncollected;
  {
    AsyncWriterOptions o;
    o.env = &env;
    o.backend = bc.backend;
    o.direct_io = bc.direct;
    o.threads = 1;
    o.chunk_bytes = 64 << 10;
    o.on_uncollected_error = [&](const Error& e) { uncollected.push_back(e); };
    AsyncWriter w(o);
    const auto f = w.open(dir / "ckpt.bin", OpenMode::CreateNew);
    EXPECT_EQ(w.uses_direct_io(f), bc.direct);
    env.inject(fc.op, 3, fc.error);
    bool thrown = false;
    bool thrown_by_submit = false;
    try {
      // Submitting in one piece: the writer splits it, so a write fault hits chunk 3. The worker
      // may fail while submit() is still queueing later chunks; submit() then throws.
      thrown_by_submit = true;
      w.submit(f, 0, data, "tensor \"w\"");
      thrown_by_submit = false;
      w.synchronize();
      if (fc.op == FaultOp::Sync) {
        // Syncs 1 and 2 succeed: the fault needs a third round.
        w.submit(f, 0, data);
        w.synchronize();
        w.submit(f, 0, data);
        w.synchronize();
      }
    } catch (const Error& e) {
      thrown = true;
      EXPECT_EQ(e.code(), fc.code) << e.what();
      EXPECT_NE(e.message().find("ckpt.bin"), std::string::npos) << e.message();
      if (fc.op == FaultOp::Write) {
        EXPECT_NE(e.message().find("at byte 131072"), std::string::npos) << e.message();
        EXPECT_EQ(e.message().rfind("tensor \"w\": ", 0), 0u) << e.message();
        // Nothing reported written that the filesystem did not accept.
        EXPECT_LE(w.bytes_written(), env.bytes_written());
        EXPECT_LT(w.bytes_written(), data.size());
      }
    }
    EXPECT_TRUE(thrown) << "fault never surfaced";
    if (thrown_by_submit) {
      // The period is not over until synchronize(), which reports the same error again.
      try {
        w.synchronize();
        ADD_FAILURE() << "synchronize() lost the error submit() threw";
      } catch (const Error& e) {
        EXPECT_NE(e.message().find("at byte 131072"), std::string::npos) << e.message();
      }
    }
    // The writer is usable again after synchronize() collected the error.
    env.clear();
    w.submit(f, 0, data);
    w.synchronize();
    EXPECT_EQ(read_file(dir / "ckpt.bin"), as_string(data));
    expect_backend_ran(w, bc);
  }
  EXPECT_TRUE(uncollected.empty());
  EXPECT_EQ(thread_count(), threads_before);
}

INSTANTIATE_TEST_SUITE_P(
    Faults, AsyncWriterFaults,
    ::testing::Combine(::testing::Values(FaultCase{FaultOp::Write, EIO, ErrorCode::IoError},
                                         FaultCase{FaultOp::Write, ENOSPC, ErrorCode::NoSpace},
                                         FaultCase{FaultOp::Sync, EIO, ErrorCode::IoError},
                                         FaultCase{FaultOp::Sync, ENOSPC, ErrorCode::NoSpace}),
                       testing::all_write_backends()),
    [](const ::testing::TestParamInfo<std::tuple<FaultCase, WriteBackendCase>>& info) {
      const FaultCase& fc = std::get<0>(info.param);
      return std::string(fc.op == FaultOp::Write ? "write" : "fsync") +
             (fc.error == ENOSPC ? "_ENOSPC_" : "_EIO_") +
             testing::write_backend_case_name(std::get<1>(info.param));
    });

class AsyncWriterBackendFaults : public ::testing::TestWithParam<WriteBackendCase> {
 protected:
  AsyncWriterOptions options(FaultInjectingEnv& env) const {
    AsyncWriterOptions o;
    o.env = &env;
    o.backend = GetParam().backend;
    o.direct_io = GetParam().direct;
    return o;
  }
};

TEST_P(AsyncWriterBackendFaults, ShortWritesAndEintrAreContinued) {
  DiskDir dir;
  CKPTIO_SKIP_UNLESS_BACKEND(GetParam(), dir.path());
  FaultInjectingEnv env;
  env.set_short_writes(3000);  // O_DIRECT writes are cut to whole blocks (4096)
  env.set_eintr_every(5);
  const auto data = random_bytes(500000, 5);
  AsyncWriterOptions o = options(env);
  o.chunk_bytes = 64 << 10;
  AsyncWriter w(o);
  const auto f = w.open(dir / "s.bin", OpenMode::CreateNew);
  w.submit(f, 0, data);
  w.close(f);
  EXPECT_EQ(read_file(dir / "s.bin"), as_string(data));
  EXPECT_GT(env.faults_fired(), 100u);
  EXPECT_EQ(env.bytes_written(), data.size());
  expect_backend_ran(w, GetParam());
}

TEST_P(AsyncWriterBackendFaults, CrashMidWriteIsReportedAndLaterWritesDoNotHappen) {
  DiskDir dir;
  CKPTIO_SKIP_UNLESS_BACKEND(GetParam(), dir.path());
  FaultInjectingEnv env;
  const auto data = random_bytes(1 << 20, 6);
  AsyncWriterOptions o = options(env);
  o.threads = 2;
  o.chunk_bytes = 16 << 10;
  AsyncWriter w(o);
  const auto f = w.open(dir / "c.bin", OpenMode::CreateNew);
  env.crash_after(10);
  try {
    w.submit(f, 0, data);
    w.synchronize();
    FAIL() << "crash not reported";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
  }
  EXPECT_LE(env.bytes_written(), 10u * (16 << 10));
  EXPECT_EQ(w.bytes_written(), env.bytes_written());
  expect_backend_ran(w, GetParam());
}

TEST_P(AsyncWriterBackendFaults, SubmitStopsProducersAfterAFailure) {
  DiskDir dir;
  CKPTIO_SKIP_UNLESS_BACKEND(GetParam(), dir.path());
  FaultInjectingEnv env;
  env.inject({.op = FaultOp::Write, .nth = 1, .error = EIO, .path_contains = "", .sticky = true});
  AsyncWriterOptions o = options(env);
  o.chunk_bytes = 4096;
  o.max_bytes_in_flight = 8192;
  std::vector<Error> uncollected;
  o.on_uncollected_error = [&](const Error& e) { uncollected.push_back(e); };
  AsyncWriter w(o);
  const auto f = w.open(dir / "p.bin", OpenMode::CreateNew);
  const std::vector<std::byte> page(4096);
  int accepted = 0;
  try {
    for (; accepted < 100000; ++accepted) w.submit(f, uint64_t(accepted) * 4096, page);
    FAIL() << "submit never reported the failure";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
  }
  EXPECT_LT(accepted, 100);  // stopped within a few chunks of the bound
  EXPECT_EQ(w.bytes_written(), 0u);
  EXPECT_EQ(env.bytes_written(), 0u);
}

TEST_P(AsyncWriterBackendFaults, DestructorReportsAnUncollectedError) {
  DiskDir dir;
  CKPTIO_SKIP_UNLESS_BACKEND(GetParam(), dir.path());
  FaultInjectingEnv env;
  env.inject(FaultOp::Write, 1, ENOSPC);
  std::vector<Error> uncollected;
  const std::vector<std::byte> data(1000);
  {
    AsyncWriterOptions o = options(env);
    o.on_uncollected_error = [&](const Error& e) { uncollected.push_back(e); };
    AsyncWriter w(o);
    const auto f = w.open(dir / "u.bin", OpenMode::CreateNew);
    w.submit(f, 0, data);
    // No synchronize(): the error has nowhere to go but the destructor.
  }
  ASSERT_EQ(uncollected.size(), 1u);
  EXPECT_EQ(uncollected[0].code(), ErrorCode::NoSpace);
  EXPECT_NE(uncollected[0].message().find("u.bin"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Backends, AsyncWriterBackendFaults, testing::all_write_backends(),
                         [](const ::testing::TestParamInfo<WriteBackendCase>& info) {
                           return testing::write_backend_case_name(info.param);
                         });

// A writer that will fsync asks for each buffered write's writeback right after it (so the disk
// works while later bytes are copied); one that will not, does not, unless told to.
class AsyncWriterWriteback : public ::testing::TestWithParam<WriteBackend> {};

TEST_P(AsyncWriterWriteback, StartsWritebackOfEveryByteExactlyWhenItWillSync) {
  const auto data = random_bytes((size_t{1} << 20) + 4321, 11);
  struct Case {
    bool sync;
    std::optional<bool> early;
    uint64_t expected;
  };
  for (const Case c : {Case{true, std::nullopt, data.size()}, Case{false, std::nullopt, 0},
                       Case{false, true, data.size()}, Case{true, false, 0}}) {
    TempDir dir;
    testing::ObservingEnv observed(Env::posix());
    AsyncWriterOptions o;
    o.env = &observed;
    o.backend = GetParam();
    o.threads = 2;
    o.chunk_bytes = 64 << 10;
    o.sync = c.sync;
    o.early_writeback = c.early;
    {
      AsyncWriter w(o);
      const auto f = w.open(dir / "a.bin", OpenMode::CreateNew);
      for (size_t off = 0; off < data.size(); off += 100000) {
        w.submit(f, off, {data.data() + off, std::min<size_t>(100000, data.size() - off)});
      }
      w.close(f);
    }
    EXPECT_EQ(observed.writeback_started.load(), c.expected)
        << "sync " << c.sync << ", early_writeback "
        << (c.early ? (*c.early ? "on" : "off") : "default");
    EXPECT_EQ(read_file(dir / "a.bin"), as_string(data));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, AsyncWriterWriteback,
                         ::testing::Values(WriteBackend::Pwrite, WriteBackend::IoUring),
                         [](const ::testing::TestParamInfo<WriteBackend>& info) {
                           return std::string(write_backend_name(info.param));
                         });

TEST(AsyncWriter, AttachedFileIsSyncedNotClosed) {
  TempDir dir;
  FaultInjectingEnv env;
  auto file = env.open_write(dir / "a.bin", OpenMode::CreateNew);
  const auto data = random_bytes(100000, 7);
  {
    AsyncWriterOptions o;
    o.env = &env;
    AsyncWriter w(o);
    const auto f = w.attach(*file);
    w.submit(f, 0, data);
    w.synchronize();
    EXPECT_EQ(env.count(FaultOp::Sync), 1u);
    w.synchronize();  // nothing new written: no second fsync
    EXPECT_EQ(env.count(FaultOp::Sync), 1u);
  }
  file->write_at(data.size(), data);  // still open
  file->close();
  EXPECT_EQ(read_file(dir / "a.bin"), as_string(data) + as_string(data));
}

TEST(AsyncWriter, RejectsUnknownFile) {
  AsyncWriter w;
  const std::vector<std::byte> b(1);
  EXPECT_THROW(w.submit(7, 0, b), Error);
}

}  // namespace
}  // namespace ckptio::io
