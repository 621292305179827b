// ckptio-bench-safetensors: save and load of a safetensors file of mixed-size tensors, beside the
// raw I/O of the same bytes measured in the same run, and the time to open a 10,000-tensor file.
//
//   ckptio-bench-safetensors [--quick] [--dir DIR] [--repeat N]
//
// Comparisons are like for like: the save and the raw write are both durable (new file, data
// fsynced, directory fsynced); the loads and the raw read all read a file that was just written,
// so both sides read from a warm page cache into freshly allocated memory. Each figure is the best
// of --repeat runs. Nothing here asserts on time: it prints figures and ratios to the goals.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/safetensors.h"
#include "ckptio/tensor.h"

namespace {

namespace fs = std::filesystem;
using namespace ckptio;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

struct Options {
  uint64_t total_bytes = kGiB;
  fs::path dir = fs::temp_directory_path();
  int repeat = 3;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "ckptio-bench-safetensors: %s\n"
               "usage: ckptio-bench-safetensors [--quick] [--dir DIR] [--repeat N]\n"
               "  --quick     128 MiB instead of 1 GiB\n"
               "  --dir DIR   where the files go (default: $TMPDIR or /tmp); they are removed\n"
               "  --repeat N  runs per figure, the best is reported (default 3)\n",
               why);
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--quick") {
      o.total_bytes = 128 * kMiB;
    } else if (a == "--dir" && i + 1 < argc) {
      o.dir = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc) {
      o.repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--help" || a == "-h") {
      usage("save/load throughput against raw I/O, and open time of a 10,000-tensor file");
    } else {
      usage(("unknown argument '" + std::string(a) + "'").c_str());
    }
  }
  return o;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A model-like mix: per block one 16 MiB matrix, two 4 MiB, four 1 MiB, eight 64 KiB, sixteen
// 4 KiB and thirty-two 256 B tensors (biases, norms), in F32/BF16/F16/I64, until the total is
// reached; the last tensor takes the remainder. The bytes are slices of one pseudo-random buffer.
struct Workload {
  std::unique_ptr<std::byte[]> data;
  uint64_t data_bytes = 0;
  std::vector<NamedTensor> tensors;
};

Workload make_workload(uint64_t total) {
  Workload w;
  w.data.reset(new std::byte[total]);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (uint64_t i = 0; i + 8 <= total; i += 8) {  // xorshift: incompressible, every page touched
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(w.data.get() + i, &x, 8);
  }
  w.data_bytes = total;
  const uint64_t group[][2] = {{16 * kMiB, 1}, {4 * kMiB, 2}, {kMiB, 4},
                               {64 << 10, 8},  {4 << 10, 16}, {256, 32}};
  const DType dtypes[] = {DType::F32, DType::BF16, DType::F16, DType::I64};
  uint64_t offset = 0;
  int index = 0;
  while (offset < total) {
    for (const auto& [size, count] : group) {
      for (uint64_t c = 0; c < count && offset < total; ++c, ++index) {
        uint64_t n = std::min(size, total - offset);
        const DType d = dtypes[index % 4];
        const uint64_t elem = static_cast<uint64_t>(dtype_bits(d) / 8);
        n -= n % elem;
        if (n == 0) {
          offset = total;
          break;
        }
        Shape shape = n % (64 * elem) == 0 ? Shape{static_cast<int64_t>(n / elem / 64), 64}
                                           : Shape{static_cast<int64_t>(n / elem)};
        w.tensors.push_back({fmt::format("blocks.{}.t{}", index / 63, index % 63),
                             TensorView{d, std::move(shape),
                                        std::span<const std::byte>(w.data.get() + offset, n)}});
        offset += n;
      }
    }
  }
  return w;
}

void check_sys(bool ok, const std::string& what) {
  if (!ok) throw system_error(errno, what);
}

// The physical limit for a durable save: one new file, the bytes written in the largest chunks
// Linux takes, fsync, fsync of the folder. System calls directly, so no ckptio layer is timed.
double raw_durable_write(const fs::path& path, std::span<const std::byte> header,
                         std::span<const std::byte> data) {
  fs::remove(path);
  const auto start = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  check_sys(fd >= 0, "open " + path.string());
  for (auto part : {header, data}) {
    while (!part.empty()) {
      const ssize_t n = ::write(fd, part.data(), std::min<size_t>(part.size(), io::kMaxIoChunk));
      check_sys(n > 0, "write " + path.string());
      part = part.subspan(static_cast<size_t>(n));
    }
  }
  check_sys(::fsync(fd) == 0, "fsync " + path.string());
  check_sys(::close(fd) == 0, "close " + path.string());
  const int dfd = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  check_sys(dfd >= 0 && ::fsync(dfd) == 0, "fsync dir");
  ::close(dfd);
  return seconds_since(start);
}

// The physical limit for a load into owned memory: fresh (never touched) memory of the kind the
// reader allocates (2 MiB aligned, huge pages advised), filled by pread.
double raw_read_fresh(const fs::path& path, uint64_t size, uint64_t* checksum) {
  const auto start = Clock::now();
  const std::shared_ptr<std::byte> buffer = io::allocate_read_buffer(size);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check_sys(fd >= 0, "open " + path.string());
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, buffer.get() + done,
                              std::min<uint64_t>(size - done, io::kMaxIoChunk),
                              static_cast<off_t>(done));
    check_sys(n > 0, "pread " + path.string());
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  const double t = seconds_since(start);
  *checksum += static_cast<uint64_t>(buffer.get()[size / 2]);  // keeps the read observable
  return t;
}

double load_owned(const fs::path& path, ReadMode mode, uint64_t* checksum) {
  const auto start = Clock::now();
  const SafetensorsReader reader = SafetensorsReader::open(path, mode);
  std::vector<Tensor> owned;
  owned.reserve(reader.tensors().size());
  for (const TensorInfo& info : reader.tensors()) owned.push_back(reader.read_owned(info.name));
  const double t = seconds_since(start);
  for (const Tensor& tensor : owned) {
    if (tensor.nbytes()) *checksum += static_cast<uint64_t>(tensor.bytes()[0]);
  }
  return t;
}

// The whole file into owned memory the way a loader does it: read_all_owned (one allocation,
// parallel preads straight into it).
double load_all_owned(const fs::path& path, uint64_t* checksum) {
  const auto start = Clock::now();
  const SafetensorsReader reader = SafetensorsReader::open(path, ReadMode::Pread);
  const std::vector<Tensor> owned = reader.read_all_owned();
  const double t = seconds_since(start);
  for (const Tensor& tensor : owned) {
    if (tensor.nbytes()) *checksum += static_cast<uint64_t>(tensor.bytes()[0]);
  }
  return t;
}

// Zero-copy: open with mmap and touch one byte per page of every tensor (what a consumer pays).
double load_mapped_touch(const fs::path& path, uint64_t* checksum) {
  const auto start = Clock::now();
  const SafetensorsReader reader = SafetensorsReader::open(path, ReadMode::Mmap);
  uint64_t sum = 0;
  for (const TensorInfo& info : reader.tensors()) {
    const Tensor t = reader.tensor(info.name);
    const auto bytes = t.bytes();
    for (size_t i = 0; i < bytes.size(); i += 4096) sum += static_cast<uint64_t>(bytes[i]);
  }
  const double t = seconds_since(start);
  *checksum += sum;
  return t;
}

std::string gbps(uint64_t bytes, double seconds) {
  return fmt::format("{:6.2f} GB/s", static_cast<double>(bytes) / seconds / 1e9);
}

std::string verdict(bool met) { return met ? "met" : "NOT met"; }

void bench_throughput(const Options& o) {
  Workload w = make_workload(o.total_bytes);
  const SafetensorsLayout layout = plan_safetensors(w.tensors);
  const auto header = std::as_bytes(std::span(layout.header.data(), layout.header.size()));
  const uint64_t file_bytes = layout.file_size;
  const fs::path st_path = o.dir / "ckptio-bench.safetensors";
  const fs::path raw_path = o.dir / "ckptio-bench-raw.bin";
  fmt::print("workload: {:.2f} GiB in {} tensors (256 B .. 16 MiB; F32/BF16/F16/I64), header {} B\n",
             static_cast<double>(file_bytes) / kGiB, w.tensors.size(), layout.header.size());
  fmt::print("files in {}; best of {} runs; GB = 1e9 bytes\n\n", o.dir.string(), o.repeat);

  // Save vs raw write, alternating so that neither side gets a systematically quieter disk.
  double save_s = 1e300, raw_write_s = 1e300;
  for (int i = 0; i < o.repeat; ++i) {
    raw_write_s = std::min(raw_write_s, raw_durable_write(raw_path, header,
                                                          {w.data.get(), w.data_bytes}));
    fs::remove(st_path);
    const auto start = Clock::now();
    save_safetensors(st_path, w.tensors);
    save_s = std::min(save_s, seconds_since(start));
  }
  fs::remove(raw_path);
  if (fs::file_size(st_path) != file_bytes) throw Error(ErrorCode::Internal, "size mismatch");

  // Loads: the file was just written, so every variant reads a warm page cache.
  uint64_t checksum = 0;
  raw_read_fresh(st_path, file_bytes, &checksum);  // make sure every page is cached
  double raw_read_s = 1e300, all_s = 1e300, pread_s = 1e300, mmap_owned_s = 1e300,
         mmap_touch_s = 1e300;
  for (int i = 0; i < o.repeat; ++i) {
    raw_read_s = std::min(raw_read_s, raw_read_fresh(st_path, file_bytes, &checksum));
    all_s = std::min(all_s, load_all_owned(st_path, &checksum));
    pread_s = std::min(pread_s, load_owned(st_path, ReadMode::Pread, &checksum));
    mmap_owned_s = std::min(mmap_owned_s, load_owned(st_path, ReadMode::Mmap, &checksum));
    mmap_touch_s = std::min(mmap_touch_s, load_mapped_touch(st_path, &checksum));
  }
  fs::remove(st_path);

  const double save_ratio = raw_write_s / save_s;
  const double load_ratio = raw_read_s / all_s;
  const double mmap_ratio = raw_read_s / mmap_owned_s;
  fmt::print("durable (data + folder fsynced), new file:\n");
  fmt::print("  raw write + fsync            {:8.3f} s  {}\n", raw_write_s, gbps(file_bytes, raw_write_s));
  fmt::print("  save_safetensors             {:8.3f} s  {}   {:.2f}x raw  (goal >= 0.90x: {})\n",
             save_s, gbps(file_bytes, save_s), save_ratio, verdict(save_ratio >= 0.9));
  fmt::print("warm page cache, into freshly allocated memory:\n");
  fmt::print("  raw pread                    {:8.3f} s  {}\n", raw_read_s, gbps(file_bytes, raw_read_s));
  fmt::print("  read_all_owned (parallel)    {:8.3f} s  {}   {:.2f}x raw  (goal >= 0.90x: {})\n",
             all_s, gbps(file_bytes, all_s), load_ratio, verdict(load_ratio >= 0.9));
  fmt::print("  read_owned per tensor, Pread {:8.3f} s  {}   {:.2f}x raw\n", pread_s,
             gbps(file_bytes, pread_s), raw_read_s / pread_s);
  fmt::print("  load owned (Mmap + copy)     {:8.3f} s  {}   {:.2f}x raw\n", mmap_owned_s,
             gbps(file_bytes, mmap_owned_s), mmap_ratio);
  fmt::print("warm page cache, zero-copy:\n");
  fmt::print("  mmap views, 1 byte per page  {:8.3f} s  {}   {:.2f}x raw pread\n", mmap_touch_s,
             gbps(file_bytes, mmap_touch_s), raw_read_s / mmap_touch_s);
  fmt::print("(checksum {})\n\n", checksum & 0xFF);
}

void bench_open(const Options& o) {
  constexpr int kTensors = 10'000;
  std::vector<float> values(kTensors * 4);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  std::vector<NamedTensor> tensors;
  for (int i = 0; i < kTensors; ++i) {
    tensors.push_back({fmt::format("model.layers.{}.block.{}.weight", i / 10, i % 10),
                       TensorView{DType::F32, {2, 2},
                                  std::as_bytes(std::span(values).subspan(i * 4, 4))}});
  }
  const fs::path path = o.dir / "ckptio-bench-10k.safetensors";
  SafetensorsWriteOptions options;
  options.sync = false;  // not timed
  save_safetensors(path, tensors, options);
  const uint64_t header_bytes = SafetensorsReader::open(path).header().header_bytes;

  auto time_opens = [&](ReadMode mode) {
    std::vector<double> ms;
    for (int i = 0; i < 30; ++i) {
      const auto start = Clock::now();
      const SafetensorsReader reader = SafetensorsReader::open(path, mode);
      ms.push_back(seconds_since(start) * 1e3);
      if (reader.tensors().size() != kTensors) throw Error(ErrorCode::Internal, "tensor count");
    }
    std::sort(ms.begin(), ms.end());
    return std::pair{ms[ms.size() / 2], ms.front()};
  };
  const auto [mmap_median, mmap_min] = time_opens(ReadMode::Mmap);
  const auto [pread_median, pread_min] = time_opens(ReadMode::Pread);
  fs::remove(path);
  fmt::print("open a {}-tensor file (header {} B; validation only, no tensor byte read), 30 opens:\n",
             kTensors, header_bytes);
  fmt::print("  Mmap mode   median {:7.2f} ms  min {:7.2f} ms   (goal < 20 ms: {})\n", mmap_median,
             mmap_min, verdict(mmap_median < 20.0));
  fmt::print("  Pread mode  median {:7.2f} ms  min {:7.2f} ms\n", pread_median, pread_min);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  try {
    fs::create_directories(o.dir);
    fmt::print("ckptio-bench-safetensors\n");
    bench_throughput(o);
    bench_open(o);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-safetensors: error: %s\n", e.what());
    return 1;
  }
}
