// ckptio-bench: durable save and load of a model-like state through the I/O engine, beside the
// physical limits and the PyTorch peers, all measured in the same run.
//
// State: 2 GiB (256 MiB with --quick), see state.h. Every figure is the median of --repeat runs.
//   limits  the best raw method for the same bytes (common/raw_limits.h): the file's bytes
//           written by pwrite by one thread and by the async writer's threads in its chunk size,
//           buffered and O_DIRECT, + fdatasync + folder fsync (the fastest counts); the file read
//           by pread into fresh huge-page memory by the parallel reader's threads (chunks in
//           order, or a share each) and by one thread, with a warm page cache (the fastest
//           counts), and with a cold one (cache dropped, root only; buffered and O_DIRECT).
//   ckptio  save_safetensors (temp file, fsync, rename, fsync of the folder) per write backend;
//           read_all_owned (parallel pread into owned memory), warm and cold.
//   peers   torch.save (+fsync) and torch.load through /usr/bin/python3; libtorch's torch::save /
//           torch::load when ckptio-bench-libtorch-peer was built; one fresh process per figure.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "ckptio_bench/peak_memory.h"
#include "ckptio_bench/state.h"
#include "ckptio_bench/torch_peers.h"
#include "common/options.h"
#include "common/raw_limits.h"
#include "common/report.h"
#include "common/timing.h"
#include "common/units.h"
#include "common/work_dir.h"

namespace {

using namespace ckptio;
using namespace ckptio::bench;
namespace fs = std::filesystem;

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
  const auto reader = SafetensorsReader::open(path, {.mode = ReadMode::Pread});
  const std::vector<Tensor> tensors = reader.read_all_owned();
  const double s = seconds_since(t0);
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.nbytes();
  if (n != expect_bytes) throw Error(ErrorCode::Internal, "load returned the wrong byte count");
  return s;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string one;
  return f >> one ? one : "unknown";
}

struct Backend {
  std::string name;
  io::AsyncWriterOptions writer;
};

std::vector<Backend> write_backends() {
  std::vector<Backend> b;
  b.push_back({"pwrite", {}});
  io::AsyncWriterOptions uring;
  uring.backend = io::WriteBackend::IoUring;
  b.push_back({io::io_uring_available() ? "io_uring" : "io_uring (unavailable: pwrite)", uring});
  io::AsyncWriterOptions direct;
  direct.direct_io = true;
  b.push_back({"pwrite + O_DIRECT", direct});
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_options(
      argc, argv,
      {"ckptio-bench", "durable save and load through the I/O engine against the limits and PyTorch",
       "256 MiB state instead of 2 GiB", 3});
  try {
    WorkDir work(opt.dir, "ckptio-bench-");
    auto log = [](const std::string& s) { std::fprintf(stderr, "ckptio-bench: %s\n", s.c_str()); };
    const uint64_t wanted = opt.quick ? 256 * kMiB : 2 * kGiB;
    const std::string load_at_start = load_average();
    log(fmt::format("building a {} MiB state", wanted / kMiB));
    const std::vector<StateTensor> state = make_state(wanted);
    const uint64_t total = state_bytes(state);
    const auto tensors = named_tensors(state);
    const SafetensorsLayout layout = plan_safetensors(tensors);
    const uint64_t file_bytes = layout.file_size;
    const int R = opt.repeat;
    Report report("ckptio-bench", "durable save and load against the limits and PyTorch");
    report.context(fmt::format(
        "State: {} tensors, {:.1f} MiB (mixed 64 MiB / 1-8 MiB / 4 KiB), one safetensors file of "
        "{} bytes. Median of {} runs. Directory: {}.",
        state.size(), double(total) / kMiB, file_bytes, R, opt.dir.string()));
    report.context(fmt::format(
        "Machine: {} CPUs, load average at start {} (other work on the machine skews absolute "
        "figures; ratios within one run are the comparison).",
        std::thread::hardware_concurrency(), load_at_start));
    report.set("quick", opt.quick);
    report.set("state_bytes", total);
    report.set("tensors", state.size());
    report.set("repeat", R);

    // The raw write writes exactly the bytes of the file ckptio writes: header, then the data in
    // the layout's order.
    RawFile raw_file{work / "raw.safetensors", {}};
    raw_file.pieces.push_back(std::as_bytes(std::span(layout.header.data(), layout.header.size())));
    for (size_t k : layout.order) raw_file.pieces.push_back(tensors[k].view.bytes);

    // Peers first, in their own processes, before this one has touched the page cache much.
    PeerTimes py, cpp;
    const fs::path libtorch_peer = opt.self.parent_path() / "ckptio-bench-libtorch-peer";
    if (opt.peers) {
      log("torch.save / torch.load through /usr/bin/python3, one process each");
      py = time_python_torch(state, work.path(), R);
      if (!py.error.empty()) report.note("torch (python) peer: " + py.error);
      if (fs::exists(libtorch_peer)) {
        log("libtorch torch::save / torch::load, one process each");
        cpp = time_libtorch(libtorch_peer, state, work.path(), R);
        if (!cpp.error.empty()) report.note("libtorch peer: " + cpp.error);
      } else {
        report.note("libtorch peer not built (needs CKPTIO_WITH_TORCH=ON; `make bench` builds it)");
      }
      fs::remove(work / "python-peer.pt");
      fs::remove(work / "libtorch-peer.pt");
    } else {
      report.note("peers skipped (--no-peers)");
    }

    // Saves: one raw write (buffered and O_DIRECT) and one save per backend per repetition, so
    // that drift of the (virtual) disk over the run hits every side alike.
    const fs::path ck_path = work / "model.safetensors";
    const std::vector<Backend> backends = write_backends();
    ckptio_save(tensors, ck_path, {});  // warm-up, untimed
    WriteLimit write_limit;
    std::vector<std::vector<double>> save_times(backends.size());
    std::vector<std::function<void()>> saves;
    for (size_t k = 0; k < backends.size(); ++k) {
      saves.push_back([&, k] { save_times[k].push_back(ckptio_save(tensors, ck_path, backends[k].writer)); });
    }
    log("raw write+fsync (buffered and O_DIRECT) and ckptio saves (" + std::to_string(backends.size()) +
        " backends), interleaved");
    for (int i = 0; i < R; ++i) write_limit.measure({raw_file}, saves);

    // Loads of the file the last save wrote, raw and ckptio alternating.
    const ReadShape read_shape{parallel_reader_threads(), parallel_reader_chunk_bytes()};
    log("raw read and ckptio load, warm cache");
    std::vector<double> load_warm, raw_cold, raw_cold_direct, load_cold;
    raw_read_fresh({ck_path}, read_shape);  // every page cached
    ReadLimit warm_limit(read_shape);
    for (int i = 0; i < R; ++i) {
      warm_limit.measure_fresh({ck_path});
      load_warm.push_back(ckptio_load(ck_path, total));
    }
    const bool can_drop = drop_caches();
    if (can_drop) {
      log("raw read and ckptio load, cold cache");
      for (int i = 0; i < R; ++i) {
        drop_caches();
        raw_cold.push_back(raw_read_fresh({ck_path}, read_shape));
        drop_caches();
        if (const auto d = raw_read_fresh_direct(ck_path, read_shape)) raw_cold_direct.push_back(*d);
        drop_caches();
        load_cold.push_back(ckptio_load(ck_path, total));
      }
    } else {
      report.note("cold-cache figures skipped: dropping the page cache needs root");
    }
    fs::remove(ck_path);
    const std::optional<double> save_peak =
        peak_extra_mib([&] { ckptio_save(tensors, ck_path, {}); });
    fs::remove(ck_path);

    // Rows.
    const std::string kWrite = "raw write+fsync", kReadWarm = "raw read (warm cache)",
                      kReadCold = "raw read (cold cache)", kTorchSave = "torch.save (+fsync)",
                      kTorchLoad = "torch.load (fresh process)";
    const std::string read_note =
        "into fresh huge-page memory (io::allocate_read_buffer), " + describe(read_shape);
    auto opt_median = [](const std::vector<double>& v) {
      return v.empty() ? std::nullopt : std::optional<double>(median(v));
    };
    report.add({Group::Limit, kWrite, write_limit.seconds(), file_bytes, "", "",
                write_limit.description() + "; interleaved with the saves"});
    report.add({Group::Limit, kReadWarm, warm_limit.seconds(), file_bytes, "", "",
                "into fresh huge-page memory (io::allocate_read_buffer), " + warm_limit.description()});
    // Cold: the faster of buffered and O_DIRECT reads.
    std::optional<double> cold_limit = opt_median(raw_cold);
    std::string cold_note = can_drop ? read_note + ", after drop_caches" : "skipped (not root)";
    if (cold_limit && !raw_cold_direct.empty()) {
      const double direct = median(raw_cold_direct);
      cold_note += direct < *cold_limit ? fmt::format(", O_DIRECT (buffered: {:.3f} s)", *cold_limit)
                                        : fmt::format(", buffered (O_DIRECT: {:.3f} s)", direct);
      cold_limit = std::min(*cold_limit, direct);
    }
    report.add({Group::Limit, kReadCold, cold_limit, file_bytes, "", "", cold_note});
    std::string best_save;
    double best_save_s = 0;
    for (size_t k = 0; k < backends.size(); ++k) {
      const double m = median(save_times[k]);
      const std::string name = "ckptio save, " + backends[k].name;
      if (best_save.empty() || m < best_save_s) {
        best_save = name;
        best_save_s = m;
      }
      report.add({Group::Ckptio, name, m, file_bytes, kWrite, py.save ? kTorchSave : "",
                  "durable: fsync + rename + folder fsync"});
    }
    report.add({Group::Ckptio, "ckptio load (warm cache)", median(load_warm), file_bytes, kReadWarm,
                py.load ? kTorchLoad : "", "read_all_owned: parallel pread into owned memory"});
    report.add({Group::Ckptio, "ckptio load (cold cache)", opt_median(load_cold), file_bytes,
                kReadCold, "", can_drop ? "read_all_owned after drop_caches" : "skipped (not root)"});
    if (py.save) {
      report.add({Group::Peer, kTorchSave, py.save, file_bytes, kWrite, "", "torch " + py.version});
      report.add({Group::Peer, kTorchLoad, py.load, file_bytes, kReadWarm, "", "torch " + py.version});
    }
    if (cpp.save) {
      report.add({Group::Peer, "torch::save (+fsync)", cpp.save, file_bytes, kWrite, "",
                  "libtorch " + cpp.version});
      report.add({Group::Peer, "torch::load (fresh process)", cpp.load, file_bytes, kReadWarm, "",
                  "libtorch " + cpp.version});
    }

    report.goal(Goal::ratio("durable save / raw write+fsync", best_save, kWrite, 0.9));
    report.goal(Goal::ratio("durable save speedup over torch.save", best_save, kTorchSave, 2.0));
    report.goal(Goal::ratio("warm load / raw read", "ckptio load (warm cache)", kReadWarm, 0.9));
    report.goal(Goal::ratio("warm load speedup over torch.load", "ckptio load (warm cache)", kTorchLoad, 2.0));
    report.goal(Goal::ratio("cold load / raw cold read", "ckptio load (cold cache)", kReadCold, 0.9));
    report.goal(Goal::value_at_most("peak extra memory of a synchronous save", save_peak, 64, "MiB"));

    // torch.save can be within 2x of the fastest durable write this disk allows; then no writer
    // can reach the speedup goal, and the report says so.
    if (py.save && write_limit.seconds()) {
      const double fastest = *write_limit.seconds();
      const double needed = *py.save / 2.0;
      if (needed < fastest) {
        report.note(fmt::format(
            "the save speedup over torch.save is bounded by the disk here: 2.0x would need a "
            "durable save in {:.3f} s, but the raw write limit took {:.3f} s, so at most {:.2f}x "
            "is reachable",
            needed, fastest, *py.save / fastest));
      }
    }
    report.emit(opt);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench: error: %s\n", e.what());
    return 1;
  }
}
