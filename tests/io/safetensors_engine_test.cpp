// save_safetensors through the async writer and SafetensorsReader::read_all_owned through the
// parallel reader: the same bytes as the in-memory serializer on every backend, and faults that
// surface with the tensor's name and leave no file behind.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/safetensors.h"
#include "io/write_backends.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

using ckptio::testing::read_file;
using ckptio::testing::TempDir;

struct State {
  std::vector<std::vector<std::byte>> buffers;
  std::vector<NamedTensor> tensors;
};

// Odd sizes so that tensor boundaries are not block aligned (the O_DIRECT head/tail paths).
State make_state() {
  State s;
  std::mt19937 rng(42);
  const std::vector<std::pair<DType, int64_t>> specs = {
      {DType::F32, 300000}, {DType::BF16, 12345}, {DType::F32, 1}, {DType::U8, 0},
      {DType::F64, 70001},  {DType::I8, 4097},    {DType::F16, 1 << 20}};
  s.buffers.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto [dtype, n] = specs[i];
    auto& b = s.buffers.emplace_back(tensor_nbytes(dtype, std::vector<int64_t>{n}));
    for (auto& x : b) x = static_cast<std::byte>(rng());
    s.tensors.push_back({"t" + std::to_string(i), TensorView{dtype, {n}, b}});
  }
  return s;
}

struct Engine {
  const char* name;
  io::WriteBackend backend;
  bool direct;
};

class SafetensorsEngine : public ::testing::TestWithParam<Engine> {};

TEST_P(SafetensorsEngine, SaveMatchesSerializerAndLoadsBack) {
  const Engine e = GetParam();
  TempDir dir;
  const State s = make_state();
  io::AsyncWriterOptions w;
  w.backend = e.backend;
  w.direct_io = e.direct;
  w.chunk_bytes = 64 << 10;
  w.max_bytes_in_flight = 256 << 10;
  SafetensorsWriteOptions o;
  o.writer = &w;
  const auto path = dir / "m.safetensors";
  save_safetensors(path, s.tensors, o);
  EXPECT_EQ(read_file(path), serialize_safetensors(s.tensors, o));
  EXPECT_EQ(io::Env::posix().list_dir(dir.path()), std::vector<std::string>{"m.safetensors"});

  for (ReadMode mode : {ReadMode::Mmap, ReadMode::Pread}) {
    const auto reader = SafetensorsReader::open(path, {.mode = mode});
    const std::vector<Tensor> loaded =
        reader.read_all_owned({.threads = 3, .chunk_bytes = 8192, .min_parallel_bytes = 0});
    ASSERT_EQ(loaded.size(), reader.tensors().size());
    for (size_t i = 0; i < loaded.size(); ++i) {
      const TensorInfo& info = reader.tensors()[i];
      const size_t index = std::stoul(info.name.substr(1));
      EXPECT_EQ(loaded[i].dtype(), s.tensors[index].view.dtype);
      EXPECT_EQ(loaded[i].shape(), s.tensors[index].view.shape);
      EXPECT_EQ(loaded[i].storage(), Tensor::Storage::Heap);
      ASSERT_EQ(loaded[i].nbytes(), s.buffers[index].size());
      EXPECT_TRUE(std::equal(loaded[i].bytes().begin(), loaded[i].bytes().end(),
                             s.buffers[index].begin()))
          << info.name;
    }
    // Owned means writable and independent of the file.
    Tensor t = loaded.front();
    if (t.nbytes() > 0) t.mutable_bytes()[0] = std::byte{1};
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, SafetensorsEngine,
                         ::testing::Values(Engine{"pwrite", io::WriteBackend::Pwrite, false},
                                           Engine{"io_uring", io::WriteBackend::IoUring, false},
                                           Engine{"pwrite_direct", io::WriteBackend::Pwrite, true}),
                         [](const auto& info) { return std::string(info.param.name); });

// Faults on every backend: the fault Env reaches io_uring submissions and O_DIRECT writes, and
// ObservingEnv checks that they, not a fallback, wrote.
class SafetensorsEngineFaults : public ::testing::TestWithParam<testing::WriteBackendCase> {
 protected:
  io::AsyncWriterOptions writer() const {
    io::AsyncWriterOptions w;
    w.backend = GetParam().backend;
    w.direct_io = GetParam().direct;
    return w;
  }
};

TEST_P(SafetensorsEngineFaults, WriteFaultNamesTensorAndLeavesNoFile) {
  testing::DiskDir dir;
  CKPTIO_SKIP_UNLESS_BACKEND(GetParam(), dir.path());
  const State s = make_state();
  for (int error : {EIO, ENOSPC}) {
    io::FaultInjectingEnv env;
    testing::ObservingEnv observed(env);
    // The 3rd write: past the header, inside the tensors (where O_DIRECT and the ring write).
    env.inject(io::FaultOp::Write, 3, error);
    io::AsyncWriterOptions w = writer();
    w.threads = 1;
    SafetensorsWriteOptions o;
    o.env = &observed;
    o.writer = &w;
    try {
      save_safetensors(dir / "m.safetensors", s.tensors, o);
      FAIL() << "fault not reported";
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), error == ENOSPC ? ErrorCode::NoSpace : ErrorCode::IoError);
      EXPECT_NE(err.message().find("m.safetensors"), std::string::npos) << err.message();
      EXPECT_NE(err.message().find("tensor \""), std::string::npos) << err.message();
      EXPECT_NE(err.message().find("at byte"), std::string::npos) << err.message();
    }
    EXPECT_TRUE(io::Env::posix().list_dir(dir.path()).empty());
  }
}

TEST_P(SafetensorsEngineFaults, FsyncFaultIsNotReportedAsSuccess) {
  testing::DiskDir dir;
  CKPTIO_SKIP_UNLESS_BACKEND(GetParam(), dir.path());
  const State s = make_state();
  io::FaultInjectingEnv env;
  env.inject(io::FaultOp::Sync, 1, EIO);
  const io::AsyncWriterOptions w = writer();
  SafetensorsWriteOptions o;
  o.env = &env;
  o.writer = &w;
  EXPECT_THROW(save_safetensors(dir / "m.safetensors", s.tensors, o), Error);
  EXPECT_TRUE(io::Env::posix().list_dir(dir.path()).empty());
}

TEST_P(SafetensorsEngineFaults, ShortWritesAndEintrStillProduceTheSameBytes) {
  testing::DiskDir dir;
  CKPTIO_SKIP_UNLESS_BACKEND(GetParam(), dir.path());
  const State s = make_state();
  io::FaultInjectingEnv env;
  testing::ObservingEnv observed(env);
  env.set_short_writes(5000);
  env.set_eintr_every(7);
  const io::AsyncWriterOptions w = writer();
  SafetensorsWriteOptions o;
  o.env = &observed;
  o.writer = &w;
  save_safetensors(dir / "m.safetensors", s.tensors, o);
  EXPECT_EQ(read_file(dir / "m.safetensors"), serialize_safetensors(s.tensors));
  testing::expect_backend_ran(observed, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Backends, SafetensorsEngineFaults, testing::all_write_backends(),
                         [](const ::testing::TestParamInfo<testing::WriteBackendCase>& info) {
                           return testing::write_backend_case_name(info.param);
                         });

// A durable save starts the disk's writeback of every byte while it writes (the atomic write's
// fsync then has little left to wait for); a save without fsync leaves the page cache alone.
TEST(SafetensorsEngine, DurableSaveStartsWritebackOfEveryByte) {
  const State s = make_state();
  for (bool sync : {true, false}) {
    TempDir dir;
    testing::ObservingEnv observed(io::Env::posix());
    SafetensorsWriteOptions o;
    o.env = &observed;
    o.sync = sync;
    save_safetensors(dir / "m.safetensors", s.tensors, o);
    const uint64_t size = serialize_safetensors(s.tensors).size();
    EXPECT_EQ(observed.writeback_started.load(), sync ? size : 0) << "sync " << sync;
  }
}

TEST(SafetensorsEngine, ParallelLoadReportsReadFaultWithFile) {
  TempDir dir;
  const State s = make_state();
  save_safetensors(dir / "m.safetensors", s.tensors);
  io::FaultInjectingEnv env;
  const auto reader = SafetensorsReader::open(dir / "m.safetensors", {.mode = ReadMode::Pread, .env = &env});
  env.inject(io::FaultOp::Read, 3, EIO);
  try {
    reader.read_all_owned({.threads = 2, .chunk_bytes = 4096, .min_parallel_bytes = 0});
    FAIL() << "fault not reported";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), ErrorCode::IoError);
    EXPECT_NE(err.message().find("m.safetensors"), std::string::npos) << err.message();
  }
}

// read_all_owned places every tensor at the same offset within a page as in the file (where
// copies out of the page cache are fastest and O_DIRECT reads land in place), on every read path.
TEST(SafetensorsReadAllOwned, TensorsKeepTheirFileOffsetWithinAPage) {
  TempDir dir;
  const State s = make_state();
  const auto path = dir / "m.safetensors";
  save_safetensors(path, s.tensors);
  const std::string bytes = read_file(path);
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = header << 8 | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  const uint64_t data_start = 8 + header;
  ASSERT_NE(data_start % 4096, 0u) << "the test needs a header that is not page sized";
  for (io::ReadPath path_kind : {io::ReadPath::Auto, io::ReadPath::Buffered, io::ReadPath::Direct}) {
    const auto reader = SafetensorsReader::open(path, {.mode = ReadMode::Pread});
    const std::vector<Tensor> loaded = reader.read_all_owned(
        {.threads = 2, .chunk_bytes = 8192, .min_parallel_bytes = 0, .path = path_kind,
         .fast_path_min_bytes = 4096});
    for (size_t i = 0; i < loaded.size(); ++i) {
      const TensorInfo& info = reader.tensors()[i];
      if (info.nbytes() == 0) continue;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded[i].bytes().data()) % 4096,
                (data_start + info.begin) % 4096) << info.name;
      const size_t index = std::stoul(info.name.substr(1));
      ASSERT_EQ(std::memcmp(loaded[i].bytes().data(), s.buffers[index].data(), info.nbytes()), 0)
          << info.name;
    }
  }
}

}  // namespace
}  // namespace ckptio
