// ckptio-bench-torch: reading a torch.save file (1 GiB by default) into owned memory with ckptio,
// beside torch.load of the same file (system Python + PyTorch) and a raw pread of it, all in the
// same run.
//
//   ckptio-bench-torch [--quick] [--dir DIR] [--repeat N]
//
// Like for like: every side reads the same file from a warm page cache into memory the process
// has not touched before, and ends with every tensor in memory it owns. torch.load is timed inside
// Python (the interpreter start and `import torch` are not counted), once per fresh process; its
// time when a process loads again into the heap the last load freed is printed apart. Each
// figure is the best of --repeat runs.
// Nothing here asserts on time: it prints figures and the ratio to the goal (>= 1.5x torch.load).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/torch_pickle.h"

namespace {

namespace fs = std::filesystem;
using namespace ckptio;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = uint64_t{1} << 20;

struct Options {
  uint64_t total_mib = 1024;
  fs::path dir = fs::temp_directory_path();
  int repeat = 3;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "ckptio-bench-torch: %s\n"
               "usage: ckptio-bench-torch [--quick] [--dir DIR] [--repeat N]\n"
               "  --quick     128 MiB instead of 1 GiB\n"
               "  --dir DIR   where the file goes (default: $TMPDIR or /tmp); it is removed\n"
               "  --repeat N  runs per figure, the best is reported (default 3)\n",
               why);
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--quick") {
      o.total_mib = 128;
    } else if (a == "--dir" && i + 1 < argc) {
      o.dir = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc) {
      o.repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--help" || a == "-h") {
      usage("torch.save file into owned memory: ckptio vs torch.load vs raw pread");
    } else {
      usage(("unknown argument '" + std::string(a) + "'").c_str());
    }
  }
  return o;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int run(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

// Writes the file with torch.save (a model-like mix of 16 MiB .. 1 KiB tensors in F32/BF16/F16/
// I64, the last taking the remainder) and times torch.load of it twice over:
//   - `fresh`: one load in each of `repeat` new processes, the best kept. The process has never
//     touched memory of that size, like a training job that resumes, and like every ckptio load
//     here (its buffers are mapped fresh and unmapped when freed).
//   - `reused`: `repeat` loads in one process, the best kept; from the second on, glibc hands
//     the previous load's freed heap back, so no page is faulted in: flattering, shown apart.
// Writes "<tensors> <fresh s> <reused s>" to `result`.
const char* kPythonScript = R"PY(
import subprocess, sys, time, torch
path, total_mib, repeat, result = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
sizes = [16 << 20] + [4 << 20] * 2 + [1 << 20] * 4 + [64 << 10] * 8 + [1 << 10] * 16
dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.int64]
sd, left, i = {}, total_mib << 20, 0
while left > 0:
    for size in sizes:
        n = min(size, left)
        if n <= 0:
            break
        dt = dtypes[i % 4]
        item = torch.tensor([], dtype=dt).element_size()
        if n < item:
            left = 0
            break
        t = torch.randint(0, 127, (n // item,), dtype=torch.int64).to(dt)
        sd["blocks.%d.t%d" % (i // 31, i % 31)] = t.reshape(-1, 64) if t.numel() % 64 == 0 else t
        left -= (n // item) * item
        i += 1
torch.save(sd, path)
del sd
one_load = ("import sys, time, torch\n"
            "start = time.perf_counter(); torch.load(sys.argv[1])\n"
            "print(time.perf_counter() - start)\n")
fresh = min(float(subprocess.run([sys.executable, "-c", one_load, path], check=True,
                                 capture_output=True, text=True).stdout)
            for _ in range(repeat))
reused = 1e300
for _ in range(repeat):
    start = time.perf_counter()
    loaded = torch.load(path)
    reused = min(reused, time.perf_counter() - start)
    del loaded
with open(result, "w") as f:
    f.write("%d\n%.9f\n%.9f\n" % (i, fresh, reused))
)PY";

double raw_read_fresh(const fs::path& path, uint64_t size, uint64_t* checksum) {
  const auto start = Clock::now();
  // The same kind of memory ckptio loads into (fresh, 2 MiB aligned, huge pages advised).
  const std::shared_ptr<std::byte> buffer = io::allocate_read_buffer(size);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw system_error(errno, "open " + path.string());
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, buffer.get() + done, std::min<uint64_t>(size - done, io::kMaxIoChunk),
                              static_cast<off_t>(done));
    if (n <= 0) throw system_error(errno, "pread " + path.string());
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  const double t = seconds_since(start);
  *checksum += static_cast<uint64_t>(buffer.get()[size / 2]);
  return t;
}

// ckptio: parse + validate, every storage copied into heap memory (CRC-32 of every record checked
// in the same pass when verify_crc), the tensors as views of those heap storages; the mapping is
// dropped before the clock stops, so only owned memory remains.
double ckptio_owned(const fs::path& path, bool verify_crc, uint64_t* checksum, size_t* count) {
  const auto start = Clock::now();
  std::vector<Tensor> owned;
  {
    torch::TorchLoadOptions options;
    options.verify_crc = verify_crc;
    options.owned = true;  // storages copied to the heap (with the CRC in the same pass)
    const torch::TorchFile file = torch::load_torch_file(path, options);
    for (const auto& [name, t] : torch::flatten_tensors(file.root)) owned.push_back(t.contiguous());
  }
  const double t = seconds_since(start);
  *count = owned.size();
  for (const Tensor& tensor : owned) {
    if (tensor.nbytes()) *checksum += static_cast<uint64_t>(tensor.bytes()[0]);
  }
  return t;
}

// Zero-copy: views into the mapping, one byte per page touched (what a consumer pays at least).
double ckptio_mapped_touch(const fs::path& path, uint64_t* checksum) {
  const auto start = Clock::now();
  torch::TorchLoadOptions options;
  options.verify_crc = false;
  const torch::TorchFile file = torch::load_torch_file(path, options);
  uint64_t sum = 0;
  for (const auto& [name, t] : torch::flatten_tensors(file.root)) {
    const Tensor view = t.contiguous();
    const auto bytes = view.bytes();
    for (size_t i = 0; i < bytes.size(); i += 4096) sum += static_cast<uint64_t>(bytes[i]);
  }
  const double t = seconds_since(start);
  *checksum += sum;
  return t;
}

std::string gbps(uint64_t bytes, double seconds) {
  return fmt::format("{:6.2f} GB/s", static_cast<double>(bytes) / seconds / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  try {
    fs::create_directories(o.dir);
    const fs::path pt = o.dir / "ckptio-bench-torch.pt";
    const fs::path script = o.dir / "ckptio-bench-torch.py";
    const fs::path result = o.dir / "ckptio-bench-torch.result";
    {
      std::ofstream(script) << kPythonScript;
    }
    fmt::print("ckptio-bench-torch\nwriting {} MiB with torch.save and timing torch.load "
               "(/usr/bin/python3)...\n", o.total_mib);
    std::fflush(stdout);
    const int rc = run("/usr/bin/python3 " + script.string() + " " + pt.string() + " " +
                       std::to_string(o.total_mib) + " " + std::to_string(o.repeat) + " " +
                       result.string());
    fs::remove(script);
    if (rc != 0) {
      fs::remove(pt);
      throw Error(ErrorCode::NotFound, "/usr/bin/python3 with torch failed (exit " + std::to_string(rc) + ")");
    }
    size_t tensors_saved = 0;
    double torch_load_s = 0, torch_reused_s = 0;
    {
      std::ifstream in(result);
      in >> tensors_saved >> torch_load_s >> torch_reused_s;
      if (!in) throw Error(ErrorCode::Corrupt, "unreadable result from the torch.load script");
    }
    fs::remove(result);
    const uint64_t file_bytes = fs::file_size(pt);

    uint64_t checksum = 0;
    size_t count = 0;
    raw_read_fresh(pt, file_bytes, &checksum);  // every page cached
    double raw_s = 1e300, crc_s = 1e300, nocrc_s = 1e300, touch_s = 1e300;
    for (int i = 0; i < o.repeat; ++i) {
      raw_s = std::min(raw_s, raw_read_fresh(pt, file_bytes, &checksum));
      crc_s = std::min(crc_s, ckptio_owned(pt, true, &checksum, &count));
      nocrc_s = std::min(nocrc_s, ckptio_owned(pt, false, &checksum, &count));
      touch_s = std::min(touch_s, ckptio_mapped_touch(pt, &checksum));
    }
    fs::remove(pt);
    if (count != tensors_saved) throw Error(ErrorCode::Internal, "tensor count differs from torch's");

    const double ratio = torch_load_s / crc_s;
    fmt::print("file: {:.2f} GiB, {} tensors (1 KiB .. 16 MiB; F32/BF16/F16/I64); best of {}; "
               "warm page cache; GB = 1e9 bytes\n\n",
               static_cast<double>(file_bytes) / (1024.0 * kMiB), count, o.repeat);
    fmt::print("into owned memory:\n");
    fmt::print("  raw pread, one thread             {:8.3f} s  {}\n", raw_s, gbps(file_bytes, raw_s));
    fmt::print("  torch.load, fresh process         {:8.3f} s  {}   {:.2f}x raw\n", torch_load_s,
               gbps(file_bytes, torch_load_s), raw_s / torch_load_s);
    fmt::print("  torch.load, heap reused (flatters){:8.3f} s  {}   {:.2f}x raw   "
               "(ckptio default: {:.2f}x this)\n",
               torch_reused_s, gbps(file_bytes, torch_reused_s), raw_s / torch_reused_s,
               torch_reused_s / crc_s);
    fmt::print("  ckptio, CRC-32 verified (default) {:8.3f} s  {}   {:.2f}x raw   {:.2f}x torch.load "
               "(goal >= 1.5x: {})\n",
               crc_s, gbps(file_bytes, crc_s), raw_s / crc_s, ratio, ratio >= 1.5 ? "met" : "NOT met");
    fmt::print("  ckptio, verify_crc = false        {:8.3f} s  {}   {:.2f}x raw   {:.2f}x torch.load\n",
               nocrc_s, gbps(file_bytes, nocrc_s), raw_s / nocrc_s, torch_load_s / nocrc_s);
    fmt::print("zero-copy:\n");
    fmt::print("  ckptio mapped views, 1 B per page {:8.3f} s  {}   {:.2f}x torch.load\n", touch_s,
               gbps(file_bytes, touch_s), torch_load_s / touch_s);
    fmt::print("(checksum {})\n", checksum & 0xFF);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-torch: error: %s\n", e.what());
    return 1;
  }
}
