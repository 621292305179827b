// ckptio-bench-torch: reading a torch.save file (1 GiB by default) into owned memory with ckptio,
// beside torch.load of the same file (system Python + PyTorch) and the best raw read of it, all
// in the same run.
//
// Like for like: every side reads the same file from a warm page cache into memory the process
// has not touched before, and ends with every tensor in memory it owns. The raw read is pread
// into the huge-page memory the loader loads into, the fastest of the loader's thread count
// (chunks in order, or a share each) and one thread.
// torch.load is timed inside Python (interpreter start and `import torch` not counted), once per
// fresh process; its time when one process loads again into the heap the last load freed is
// shown apart. Each figure is the median of --repeat runs.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/torch_pickle.h"
#include "common/options.h"
#include "common/peer_process.h"
#include "common/raw_limits.h"
#include "common/report.h"
#include "common/timing.h"
#include "common/work_dir.h"

namespace {

using namespace ckptio;
using namespace ckptio::bench;
namespace fs = std::filesystem;

// Writes the file with torch.save (a model-like mix of 16 MiB .. 1 KiB tensors in F32/BF16/F16/
// I64, the last taking the remainder) and times torch.load of it:
//   - fresh: one load in each of `repeat` new processes (like a training job that resumes, and
//     like every ckptio load here: its buffers are mapped fresh and unmapped when freed);
//   - reused: `repeat` loads in one process; from the second on glibc hands the previous load's
//     freed heap back, so no page is faulted in: flattering, shown apart.
// Prints {"tensors", "fresh": [s...], "reused": [s...], "version"}.
const char* kPythonScript = R"PY(
import json, subprocess, sys, time, torch
path, total_mib, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
fresh = [float(subprocess.run([sys.executable, "-c", one_load, path], check=True,
                              capture_output=True, text=True).stdout)
         for _ in range(repeat)]
reused = []
for _ in range(repeat + 1):
    start = time.perf_counter()
    loaded = torch.load(path)
    reused.append(time.perf_counter() - start)
    del loaded
print(json.dumps({"tensors": i, "fresh": fresh, "reused": reused[1:], "version": torch.__version__}))
)PY";

uint64_t g_checksum = 0;

// ckptio: parse + validate, every storage copied into owned memory (CRC-32 of every record checked
// in the same pass when verify_crc), the tensors as views of those storages; the mapping is
// dropped before the clock stops, so only owned memory remains.
double ckptio_owned(const fs::path& path, bool verify_crc, size_t* count) {
  const auto start = Clock::now();
  std::vector<Tensor> owned;
  {
    pt::TorchLoadOptions options;
    options.verify_crc = verify_crc;
    options.owned = true;
    const pt::TorchFile file = pt::load_torch_file(path, options);
    for (const auto& [name, t] : pt::flatten_tensors(file.root)) owned.push_back(t.contiguous());
  }
  const double t = seconds_since(start);
  *count = owned.size();
  for (const Tensor& tensor : owned) {
    if (tensor.nbytes()) g_checksum += static_cast<uint64_t>(tensor.bytes()[0]);
  }
  return t;
}

// Zero-copy: views into the mapping, one byte per page touched (what a consumer pays at least).
double ckptio_mapped_touch(const fs::path& path) {
  const auto start = Clock::now();
  pt::TorchLoadOptions options;
  options.verify_crc = false;
  const pt::TorchFile file = pt::load_torch_file(path, options);
  uint64_t sum = 0;
  for (const auto& [name, t] : pt::flatten_tensors(file.root)) {
    const Tensor view = t.contiguous();
    const auto bytes = view.bytes();
    for (size_t i = 0; i < bytes.size(); i += 4096) sum += static_cast<uint64_t>(bytes[i]);
  }
  const double t = seconds_since(start);
  g_checksum += sum;
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(
      argc, argv,
      {"ckptio-bench-torch", "torch.save file into owned memory: ckptio vs torch.load vs raw read",
       "128 MiB instead of 1 GiB", 3});
  try {
    WorkDir work(o.dir, "ckptio-bench-torch-");
    const fs::path pt = work / "bench.pt";
    const fs::path script = work / "make_and_load.py";
    io::write_file_atomic(io::Env::posix(), script, kPythonScript);
    const int total_mib = o.quick ? 128 : 1024;
    std::fprintf(stderr, "ckptio-bench-torch: writing %d MiB with torch.save and timing torch.load "
                 "(/usr/bin/python3)\n", total_mib);
    const PeerRun py = run_peer_process("/usr/bin/python3 " + shell_quote(script.string()) + " " +
                                        shell_quote(pt.string()) + " " + std::to_string(total_mib) +
                                        " " + std::to_string(o.repeat));
    if (!py.result) throw Error(ErrorCode::NotFound, "/usr/bin/python3 with torch failed: " + py.error);
    const auto& r = *py.result;
    const size_t tensors_saved = r.at("tensors").get<size_t>();
    const double torch_fresh = median(r.at("fresh").get<std::vector<double>>());
    const double torch_reused = median(r.at("reused").get<std::vector<double>>());
    const std::string version = r.value("version", std::string());
    const uint64_t file_bytes = fs::file_size(pt);

    // The torch loader copies storages with min(hardware threads, 8) threads.
    const ReadShape shape{default_worker_threads(), parallel_reader_chunk_bytes()};
    size_t count = 0;
    raw_read_fresh({pt}, shape);  // every page cached
    ReadLimit read_limit(shape);
    std::vector<double> crc_s, nocrc_s, touch_s;
    for (int i = 0; i < o.repeat; ++i) {
      read_limit.measure_fresh({pt});
      crc_s.push_back(ckptio_owned(pt, true, &count));
      nocrc_s.push_back(ckptio_owned(pt, false, &count));
      touch_s.push_back(ckptio_mapped_touch(pt));
    }
    if (count != tensors_saved) throw Error(ErrorCode::Internal, "tensor count differs from torch's");

    Report report("ckptio-bench-torch", "a torch.save file into owned memory");
    report.context(fmt::format(
        "File: {:.2f} GiB, {} tensors (1 KiB .. 16 MiB; F32/BF16/F16/I64), written by torch {}. "
        "Warm page cache. Median of {} runs.",
        static_cast<double>(file_bytes) / (1 << 30), count, version, o.repeat));
    report.set("quick", o.quick);
    report.set("checksum", g_checksum & 0xFF);
    const std::string kRead = "raw read (warm cache)", kTorch = "torch.load (fresh process)";
    report.add({Group::Limit, kRead, read_limit.seconds(), file_bytes, "", "",
                "into fresh huge-page memory, " + read_limit.description()});
    report.add({Group::Ckptio, "ckptio, CRC-32 verified (default)", median(crc_s), file_bytes, kRead,
                kTorch, "owned storages"});
    report.add({Group::Ckptio, "ckptio, verify_crc = false", median(nocrc_s), file_bytes, kRead, kTorch,
                "owned storages"});
    report.add({Group::Reference, "ckptio mapped views, 1 B per page touched", median(touch_s),
                0, "", kTorch, "zero-copy: not a read of every byte, so no limit applies"});
    report.add({Group::Peer, kTorch, torch_fresh, file_bytes, kRead, "", "torch " + version});
    report.add({Group::Reference, "torch.load, heap reused", torch_reused, file_bytes, "", "",
                "later loads in one process reuse the freed heap: flattering, not comparable"});
    report.goal(Goal::ratio("ckptio (CRC verified) speedup over torch.load", "ckptio, CRC-32 verified (default)",
                 kTorch, 1.5));
    report.emit(o);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-torch: error: %s\n", e.what());
    return 1;
  }
}
