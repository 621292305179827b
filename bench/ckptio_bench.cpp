// ckptio-bench: durable save and load of a model-like state through the I/O engine, beside the
// physical limits and the PyTorch peers, all measured in the same run.
//
//   ckptio-bench [--quick] [--json] [--dir DIR] [--out DIR] [--repeat N] [--no-peers]
//
// The state is 2 GiB (256 MiB with --quick) in tensors of mixed sizes: a few of 64 MiB, many of
// 1-8 MiB and a thousand of 4 KiB. Every figure is the median of --repeat runs.
//   limits  raw sequential write()+fsync of the same bytes into a new file; raw read() of that
//           file into freshly allocated memory with a warm page cache and with a cold one (caches
//           dropped through /proc/sys/vm/drop_caches, root only); memcpy bandwidth.
//   ckptio  save_safetensors (temp file, fsync, rename, fsync of the folder) per write backend;
//           load into owned memory with parallel reads, warm and cold.
//   peers   torch.save (+fsync, for the same durability) and torch.load through /usr/bin/python3;
//           libtorch's torch::save/torch::load when the libtorch peer program was built.
// Goals are printed as ratios; nothing is asserted.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/safetensors.h"
#include "ckptio/tensor.h"
#include "png_chart.h"

namespace {

namespace fs = std::filesystem;
using namespace ckptio;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr uint64_t kKiB = uint64_t{1} << 10;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

struct Options {
  uint64_t total_bytes = 2 * kGiB;
  bool quick = false;
  bool json_output = false;
  bool peers = true;
  int repeat = 3;
  fs::path dir = fs::temp_directory_path();
  fs::path out = fs::path(CKPTIO_SOURCE_DIR) / "bench" / "results";
  fs::path self;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "ckptio-bench: %s\n"
               "usage: ckptio-bench [--quick] [--json] [--dir DIR] [--out DIR] [--repeat N] "
               "[--no-peers]\n"
               "  --quick     256 MiB state instead of 2 GiB (under a minute)\n"
               "  --json      print the results as JSON instead of the Markdown table\n"
               "  --dir DIR   where the checkpoint files go (default $TMPDIR or /tmp); removed\n"
               "  --out DIR   where the table, JSON and chart go (default bench/results)\n"
               "  --repeat N  runs per figure, the median is reported (default 3)\n"
               "  --no-peers  skip torch.save/torch.load and libtorch\n",
               why.c_str());
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  o.self = argv[0];
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--quick") {
      o.quick = true;
      o.total_bytes = 256 * kMiB;
    } else if (a == "--json") {
      o.json_output = true;
    } else if (a == "--no-peers") {
      o.peers = false;
    } else if (a == "--dir" && i + 1 < argc) {
      o.dir = argv[++i];
    } else if (a == "--out" && i + 1 < argc) {
      o.out = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc) {
      o.repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--help" || a == "-h") {
      usage("durable save/load against the disk, memcpy and PyTorch");
    } else {
      usage("unknown argument '" + std::string(a) + "'");
    }
  }
  return o;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// ---------------------------------------------------------------------------------------------
// The state

struct StateTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::unique_ptr<std::byte[]> data;
  size_t size = 0;
};

void fill_pseudo_random(std::byte* p, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<std::byte>(i);
}

// A few 64 MiB tensors (one per 256 MiB of state), a thousand of 4 KiB, and 1-8 MiB tensors for
// the rest. Mostly F32 with some BF16, like a mixed-precision model.
std::vector<StateTensor> make_state(uint64_t total) {
  std::vector<uint64_t> sizes;
  const uint64_t n_big = std::max<uint64_t>(1, total / (256 * kMiB));
  for (uint64_t i = 0; i < n_big; ++i) sizes.push_back(64 * kMiB);
  for (int i = 0; i < 1000; ++i) sizes.push_back(4 * kKiB);
  uint64_t used = n_big * 64 * kMiB + 1000 * 4 * kKiB;
  for (uint64_t i = 0; used < total; ++i) {
    uint64_t s = (1 + (i * 5) % 8) * kMiB;  // 1..8 MiB, cycling
    s = std::min(s, total - used);
    s &= ~uint64_t{3};
    if (s == 0) break;
    sizes.push_back(s);
    used += s;
  }
  std::vector<StateTensor> state;
  state.reserve(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    StateTensor t;
    const bool bf16 = i % 5 == 4;
    t.dtype = bf16 ? DType::BF16 : DType::F32;
    t.name = fmt::format("model.layers.{}.{}", i, bf16 ? "norm.weight" : "proj.weight");
    t.shape = {static_cast<int64_t>(sizes[i] / (bf16 ? 2 : 4))};
    t.size = sizes[i];
    t.data.reset(new std::byte[t.size]);
    fill_pseudo_random(t.data.get(), t.size, i + 1);
    state.push_back(std::move(t));
  }
  return state;
}

uint64_t state_bytes(const std::vector<StateTensor>& s) {
  uint64_t n = 0;
  for (const auto& t : s) n += t.size;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Limits

void check(bool ok, const std::string& what) {
  if (!ok) throw Error(ErrorCode::IoError, what + ": " + std::strerror(errno));
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  check(fd >= 0, "open " + dir.string());
  check(::fsync(fd) == 0, "fsync " + dir.string());
  ::close(fd);
}

// Sequential write() of every tensor into a new file, fsync, fsync of the folder.
double raw_write(const std::vector<StateTensor>& state, const fs::path& path) {
  fs::remove(path);
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  check(fd >= 0, "open " + path.string());
  for (const auto& t : state) {
    size_t done = 0;
    while (done < t.size) {
      const ssize_t n = ::write(fd, t.data.get() + done, std::min<size_t>(t.size - done, kGiB));
      if (n < 0 && errno == EINTR) continue;
      check(n > 0, "write " + path.string());
      done += static_cast<size_t>(n);
    }
  }
  check(::fdatasync(fd) == 0, "fsync " + path.string());
  ::close(fd);
  fsync_dir(path.parent_path());
  return seconds_since(t0);
}

// read() of the whole file into memory allocated (and first touched) during the measurement.
double raw_read(const fs::path& path) {
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, "open " + path.string());
  struct stat st {};
  ::fstat(fd, &st);
  const auto size = static_cast<size_t>(st.st_size);
  std::unique_ptr<std::byte[]> buf(new std::byte[size]);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, buf.get() + done, std::min<size_t>(size - done, 64 * kMiB));
    if (n < 0 && errno == EINTR) continue;
    check(n > 0, "read " + path.string());
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  const double s = seconds_since(t0);
  buf.reset();
  return s;
}

double memcpy_gbps() {
  const size_t n = 256 * kMiB;
  std::unique_ptr<std::byte[]> a(new std::byte[n]), b(new std::byte[n]);
  std::memset(a.get(), 1, n);
  std::memset(b.get(), 2, n);
  std::vector<double> rates;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    std::memcpy(b.get(), a.get(), n);
    rates.push_back(static_cast<double>(n) / seconds_since(t0) / 1e9);
    std::swap(a, b);
  }
  return median(rates);
}

bool drop_caches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  if (!f) return false;
  f << "3\n";
  f.flush();
  return static_cast<bool>(f);
}

// Peak RSS growth of `fn` (VmHWM reset through /proc/self/clear_refs); nullopt if unsupported.
std::optional<double> peak_extra_mib(const std::function<void()>& fn) {
  auto status_kib = [](const char* key) -> long {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind(key, 0) == 0) return std::atol(line.c_str() + std::strlen(key));
    }
    return -1;
  };
  {
    std::ofstream c("/proc/self/clear_refs");
    if (!c) return std::nullopt;
    c << "5\n";
    c.flush();
    if (!c) return std::nullopt;
  }
  const long before = status_kib("VmRSS:");
  fn();
  const long peak = status_kib("VmHWM:");
  if (before < 0 || peak < 0) return std::nullopt;
  return static_cast<double>(std::max(0L, peak - before)) / 1024.0;
}

// ---------------------------------------------------------------------------------------------
// ckptio

std::vector<NamedTensor> named(const std::vector<StateTensor>& state) {
  std::vector<NamedTensor> v;
  v.reserve(state.size());
  for (const auto& t : state) {
    v.push_back({t.name, TensorView{t.dtype, t.shape, {t.data.get(), t.size}}});
  }
  return v;
}

double ckptio_save(const std::vector<NamedTensor>& tensors, const fs::path& path,
                   const io::AsyncWriterOptions& writer) {
  fs::remove(path);
  SafetensorsWriteOptions o;
  o.writer = &writer;
  const auto t0 = Clock::now();
  save_safetensors(path, tensors, o);
  return seconds_since(t0);
}

double ckptio_load(const fs::path& path, uint64_t expect_bytes) {
  const auto t0 = Clock::now();
  const auto reader = SafetensorsReader::open(path, ReadMode::Pread);
  const std::vector<Tensor> tensors = reader.read_all_owned();
  const double s = seconds_since(t0);
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.nbytes();
  if (n != expect_bytes) throw Error(ErrorCode::Internal, "load returned the wrong byte count");
  return s;
}

// ---------------------------------------------------------------------------------------------
// Peers

constexpr const char* kTorchPeer = R"PY(
import json, os, sys, time
import torch
spec = json.load(open(sys.argv[1]))
path, repeat = spec["path"], spec["repeat"]
torch.manual_seed(0)
state = {}
for name, dtype, numel in spec["tensors"]:
    t = torch.empty(numel, dtype=torch.float32 if dtype == "F32" else torch.bfloat16)
    t.uniform_()
    state[name] = t
def median(v):
    v = sorted(v); n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
saves, loads = [], []
for _ in range(repeat):
    if os.path.exists(path): os.remove(path)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    os.fsync(dfd); os.close(dfd)
    saves.append(time.perf_counter() - t0)
for _ in range(repeat):
    t0 = time.perf_counter()
    loaded = torch.load(path)
    loads.append(time.perf_counter() - t0)
    del loaded
os.remove(path)
print(json.dumps({"save": median(saves), "load": median(loads), "version": torch.__version__}))
)PY";

struct PeerResult {
  std::optional<double> save, load;
  std::string note;
};

std::string run_capture(const std::string& cmd, int& status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  status = ::pclose(p);
  return out;
}

json peer_spec(const std::vector<StateTensor>& state, const fs::path& path, int repeat) {
  json spec;
  spec["path"] = path.string();
  spec["repeat"] = repeat;
  spec["tensors"] = json::array();
  for (const auto& t : state) {
    spec["tensors"].push_back({t.name, std::string(dtype_name(t.dtype)), t.shape[0]});
  }
  return spec;
}

PeerResult run_peer(const std::string& command_prefix, const json& spec, const fs::path& dir,
                    const std::string& tag) {
  PeerResult r;
  const fs::path spec_path = dir / ("ckptio-bench-" + tag + ".json");
  io::write_file_atomic(io::Env::posix(), spec_path, spec.dump());
  int status = 0;
  const std::string out = run_capture(command_prefix + " '" + spec_path.string() + "' 2>&1", status);
  fs::remove(spec_path);
  const auto brace = out.rfind('{');
  if (status != 0 || brace == std::string::npos) {
    r.note = tag + " failed: " + out.substr(0, 300);
    return r;
  }
  try {
    const json j = json::parse(out.substr(brace));
    r.save = j.at("save").get<double>();
    r.load = j.at("load").get<double>();
    r.note = tag + " " + j.value("version", std::string());
  } catch (const std::exception& e) {
    r.note = tag + " output unreadable: " + e.what();
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Report

struct Row {
  std::string group;  // limit, ckptio, peer
  std::string name;
  std::optional<double> seconds;
  double bytes = 0;
  std::string vs_limit;  // "0.93x raw write+fsync"
  std::string vs_peer;   // "3.1x torch.save"
  std::string note;
  double gbps() const { return seconds && *seconds > 0 ? bytes / *seconds / 1e9 : 0; }
};

std::string ratio(std::optional<double> num, std::optional<double> den, const std::string& what) {
  if (!num || !den || *den <= 0) return "";
  return fmt::format("{:.2f}x {}", *num / *den, what);
}

struct Goal {
  std::string text;
  std::optional<double> value;
  double target;
};

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  try {
    fs::create_directories(opt.dir);
    const fs::path work = opt.dir / ("ckptio-bench-" + io::random_suffix());
    fs::create_directories(work);
    struct Cleanup {
      fs::path p;
      ~Cleanup() {
        std::error_code ec;
        fs::remove_all(p, ec);
      }
    } cleanup{work};
    auto log = [&](const std::string& s) { std::fprintf(stderr, "ckptio-bench: %s\n", s.c_str()); };

    std::string load_at_start = "unknown";
    {
      std::ifstream f("/proc/loadavg");
      std::string one;
      if (f >> one) load_at_start = one;
    }
    log(fmt::format("building a {} MiB state", opt.total_bytes / kMiB));
    const std::vector<StateTensor> state = make_state(opt.total_bytes);
    const uint64_t total = state_bytes(state);
    const auto tensors = named(state);
    const int R = opt.repeat;
    std::vector<Row> rows;
    std::vector<std::string> notes;

    // Limits.
    log("memcpy");
    const double memcpy_rate = memcpy_gbps();
    const fs::path raw_path = work / "raw.bin";
    std::vector<double> w, rw, rc;
    // Warm-up and the file the reads use; the timed raw writes run interleaved with ckptio's
    // saves below, so that drift of the (virtual) disk over the run hits both sides alike.
    raw_write(state, raw_path);
    log("raw read");
    for (int i = 0; i < R; ++i) rw.push_back(raw_read(raw_path));
    const bool can_drop = drop_caches();
    if (can_drop) {
      for (int i = 0; i < R; ++i) {
        drop_caches();
        rc.push_back(raw_read(raw_path));
      }
    } else {
      notes.push_back("cold-cache figures skipped: dropping the page cache needs root");
    }
    fs::remove(raw_path);
    const std::optional<double> raw_warm_s = median(rw);
    const std::optional<double> raw_cold_s =
        rc.empty() ? std::nullopt : std::optional<double>(median(rc));
    rows.push_back({"limit", "raw read (warm cache)", raw_warm_s, double(total), "", "", "1 thread, read() into new memory"});
    rows.push_back({"limit", "raw read (cold cache)", raw_cold_s, double(total), "", "",
                    can_drop ? "after drop_caches" : "skipped (not root)"});
    rows.push_back({"limit", "memcpy", double(total) / (memcpy_rate * 1e9), double(total), "", "", "1 thread, 256 MiB buffers"});

    // Peers first, so that ckptio's ratios can name them.
    PeerResult torch_py, torch_cpp;
    if (opt.peers) {
      log("torch.save / torch.load through /usr/bin/python3");
      const fs::path script = work / "torch_peer.py";
      io::write_file_atomic(io::Env::posix(), script, kTorchPeer);
      torch_py = run_peer("/usr/bin/python3 '" + script.string() + "'",
                          peer_spec(state, work / "peer.pt", R), work, "python torch");
      const fs::path libtorch_peer = opt.self.parent_path() / "ckptio-bench-libtorch-peer";
      if (fs::exists(libtorch_peer)) {
        log("libtorch torch::save / torch::load");
        torch_cpp = run_peer("'" + libtorch_peer.string() + "'",
                             peer_spec(state, work / "peer-cpp.pt", R), work, "libtorch");
      } else {
        torch_cpp.note = "libtorch peer not built (needs CKPTIO_WITH_TORCH=ON)";
      }
      if (!torch_py.save) notes.push_back(torch_py.note);
      if (!torch_cpp.save) notes.push_back(torch_cpp.note);
    } else {
      notes.push_back("peers skipped (--no-peers)");
    }

    // ckptio save per backend, then loads of the file the last save wrote.
    struct Backend {
      std::string name;
      io::AsyncWriterOptions writer;
    };
    std::vector<Backend> backends;
    backends.push_back({"pwrite", {}});
    {
      io::AsyncWriterOptions o;
      o.backend = io::WriteBackend::IoUring;
      backends.push_back({io::io_uring_available() ? "io_uring" : "io_uring (unavailable: pwrite)", o});
    }
    {
      io::AsyncWriterOptions o;
      o.direct_io = true;
      backends.push_back({"pwrite + O_DIRECT", o});
    }
    const fs::path ck_path = work / "model.safetensors";
    std::optional<double> best_save;
    std::string best_backend;
    // Warm-up, untimed: the first save after the cold-cache reads and the peers otherwise pays
    // for page-cache reclaim and writeback left over from them.
    ckptio_save(tensors, ck_path, {});
    // Repetition-major order, so that drift on a busy machine hits every backend alike.
    std::vector<std::vector<double>> save_times(backends.size());
    for (int i = 0; i < R; ++i) {
      if (i == 0) log("raw write+fsync");
      w.push_back(raw_write(state, raw_path));
      fs::remove(raw_path);
      for (size_t k = 0; k < backends.size(); ++k) {
        if (i == 0) log("ckptio save, " + backends[k].name);
        save_times[k].push_back(ckptio_save(tensors, ck_path, backends[k].writer));
      }
    }
    const std::optional<double> raw_write_s = median(w);
    rows.insert(rows.begin(), {"limit", "raw write+fsync", raw_write_s, double(total), "", "",
                               "1 thread, write(); interleaved with the saves"});
    for (size_t k = 0; k < backends.size(); ++k) {
      const double m = median(save_times[k]);
      if (!best_save || m < *best_save) {
        best_save = m;
        best_backend = backends[k].name;
      }
      rows.push_back({"ckptio", "ckptio save, " + backends[k].name, m, double(total),
                      ratio(raw_write_s, m, "raw write+fsync"),
                      ratio(torch_py.save, m, "torch.save"), "durable: fsync + rename + dir fsync"});
    }
    log("ckptio load");
    std::vector<double> lw, lc;
    ckptio_save(tensors, ck_path, {});
    for (int i = 0; i < R; ++i) lw.push_back(ckptio_load(ck_path, total));
    const double load_warm = median(lw);
    rows.push_back({"ckptio", "ckptio load (warm cache)", load_warm, double(total),
                    ratio(raw_warm_s, load_warm, "raw read"), ratio(torch_py.load, load_warm, "torch.load"),
                    "parallel pread into owned memory"});
    std::optional<double> load_cold;
    if (can_drop) {
      for (int i = 0; i < R; ++i) {
        drop_caches();
        lc.push_back(ckptio_load(ck_path, total));
      }
      load_cold = median(lc);
    }
    rows.push_back({"ckptio", "ckptio load (cold cache)", load_cold, double(total),
                    ratio(raw_cold_s, load_cold, "raw cold read"), "",
                    can_drop ? "parallel pread after drop_caches" : "skipped (not root)"});
    fs::remove(ck_path);
    const std::optional<double> save_peak = peak_extra_mib([&] { ckptio_save(tensors, ck_path, {}); });
    fs::remove(ck_path);

    if (torch_py.save) {
      rows.push_back({"peer", "torch.save (+fsync)", torch_py.save, double(total), ratio(raw_write_s, torch_py.save, "raw write+fsync"), "", torch_py.note});
      rows.push_back({"peer", "torch.load (warm cache)", torch_py.load, double(total), ratio(raw_warm_s, torch_py.load, "raw read"), "", torch_py.note});
    }
    if (torch_cpp.save) {
      rows.push_back({"peer", "torch::save (+fsync)", torch_cpp.save, double(total), ratio(raw_write_s, torch_cpp.save, "raw write+fsync"), "", torch_cpp.note});
      rows.push_back({"peer", "torch::load (warm cache)", torch_cpp.load, double(total), ratio(raw_warm_s, torch_cpp.load, "raw read"), "", torch_cpp.note});
    }

    // Goals (ratios in this run; higher is better, target in brackets).
    std::vector<Goal> goals = {
        {"durable save (" + best_backend + ") / raw write+fsync", raw_write_s && best_save ? std::optional(*raw_write_s / *best_save) : std::nullopt, 0.9},
        {"durable save (" + best_backend + ") speedup over torch.save", torch_py.save && best_save ? std::optional(*torch_py.save / *best_save) : std::nullopt, 2.0},
        {"warm load / raw read", raw_warm_s ? std::optional(*raw_warm_s / load_warm) : std::nullopt, 0.9},
        {"warm load speedup over torch.load", torch_py.load ? std::optional(*torch_py.load / load_warm) : std::nullopt, 2.0},
        {"cold load / raw cold read", raw_cold_s && load_cold ? std::optional(*raw_cold_s / *load_cold) : std::nullopt, 0.9},
    };

    // A peer ratio can be out of reach on a given disk: when torch.save is within 2x of the
    // fastest durable write of the same bytes measured here, no writer can reach the goal.
    if (torch_py.save && best_save && raw_write_s) {
      const double fastest = std::min(*raw_write_s, *best_save);
      const double needed = *torch_py.save / 2.0;
      if (*torch_py.save / *best_save < 2.0 && needed < fastest) {
        notes.push_back(fmt::format(
            "the save speedup over torch.save is bounded by the disk here: 2.0x would need a "
            "durable save in {:.3f} s ({:.2f} GB/s), but the fastest durable write of the same "
            "bytes in this run took {:.3f} s ({:.2f} GB/s), so at most {:.2f}x is reachable",
            needed, double(total) / needed / 1e9, fastest, double(total) / fastest / 1e9,
            *torch_py.save / fastest));
      }
    }

    // Markdown.
    std::ostringstream md;
    md << fmt::format("# ckptio-bench{}\n\n", opt.quick ? " --quick" : "");
    md << fmt::format("State: {} tensors, {:.1f} MiB (mixed 64 MiB / 1-8 MiB / 4 KiB). Median of {} runs. "
                      "Directory: {}.\n\n",
                      state.size(), double(total) / kMiB, R, opt.dir.string());
    md << fmt::format("Machine: {} CPUs, load average at start {} (other work on the machine skews "
                      "absolute figures; ratios within one run are the comparison).\n\n",
                      std::thread::hardware_concurrency(), load_at_start);
    md << "| Group | Measurement | Time (s) | GB/s | vs limit | vs peer | Notes |\n";
    md << "|---|---|---:|---:|---|---|---|\n";
    for (const Row& r : rows) {
      md << fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", r.group, r.name,
                        r.seconds ? fmt::format("{:.3f}", *r.seconds) : "-",
                        r.seconds ? fmt::format("{:.2f}", r.gbps()) : "-", r.vs_limit, r.vs_peer, r.note);
    }
    md << "\nGoals (ratios measured in this run; not asserted):\n\n";
    for (const Goal& g : goals) {
      md << fmt::format("- {}: {} (goal >= {:.1f}x){}\n", g.text,
                        g.value ? fmt::format("{:.2f}x", *g.value) : "not measured", g.target,
                        g.value ? (*g.value >= g.target ? " - met" : " - NOT met") : "");
    }
    md << fmt::format("- peak extra memory of a synchronous save: {} (goal < 64 MiB){}\n",
                      save_peak ? fmt::format("{:.1f} MiB", *save_peak) : "not measured",
                      save_peak ? (*save_peak < 64 ? " - met" : " - NOT met") : "");
    for (const auto& n : notes) md << "\nNote: " << n << "\n";

    json j;
    j["quick"] = opt.quick;
    j["state_bytes"] = total;
    j["tensors"] = state.size();
    j["repeat"] = R;
    j["cpus"] = std::thread::hardware_concurrency();
    j["load_average_at_start"] = load_at_start;
    j["rows"] = json::array();
    for (const Row& r : rows) {
      j["rows"].push_back({{"group", r.group}, {"name", r.name},
                           {"seconds", r.seconds ? json(*r.seconds) : json(nullptr)},
                           {"gbps", r.seconds ? json(r.gbps()) : json(nullptr)},
                           {"vs_limit", r.vs_limit}, {"vs_peer", r.vs_peer}, {"note", r.note}});
    }
    j["goals"] = json::array();
    for (const Goal& g : goals) {
      j["goals"].push_back({{"goal", g.text}, {"ratio", g.value ? json(*g.value) : json(nullptr)},
                            {"target", g.target}});
    }
    j["save_peak_extra_mib"] = save_peak ? json(*save_peak) : json(nullptr);
    j["notes"] = notes;

    // Files.
    fs::create_directories(opt.out);
    const std::string stem = opt.quick ? "ckptio_bench_quick" : "ckptio_bench";
    io::write_file_atomic(io::Env::posix(), opt.out / (stem + ".md"), md.str());
    io::write_file_atomic(io::Env::posix(), opt.out / (stem + ".json"), j.dump(2) + "\n");
    std::vector<bench::Bar> bars;
    for (const Row& r : rows) {
      if (!r.seconds) continue;
      const uint32_t color = r.group == "limit" ? 0x888888 : r.group == "ckptio" ? 0x3366cc : 0xdd7722;
      bars.push_back({r.name, r.gbps(), color, fmt::format("{:.2f} GB/s", r.gbps())});
    }
    bench::write_bar_chart_png(opt.out / (stem + ".png"),
                               fmt::format("ckptio-bench: {} MiB state, GB/s (higher is better)", total / kMiB),
                               bars);

    if (opt.json_output) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%s", md.str().c_str());
      std::printf("\nWrote %s/%s.{md,json,png}\n", opt.out.c_str(), stem.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench: error: %s\n", e.what());
    return 1;
  }
}
