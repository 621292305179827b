// ckptio-bench-checkpoint: how long a training step is blocked by CheckpointIO::save, against the
// physical limits measured in the same run.
//
//   ckptio-bench-checkpoint [--quick] [--dir DIR] [--repeat N]
//
// State: a model-like mix (a few 64 MiB tensors, many of 1-8 MiB, a thousand of 4 KiB), 2 GiB
// (--quick: 256 MiB), passed as the `model` component.
//   - async copy mode: save() blocking time (the parallel copy into the reused staging pool)
//     against one plain memcpy of the same bytes into preallocated, pre-faulted memory
//     (goal <= 1.2x). The first save, which allocates the pool, is reported separately.
//   - async borrow mode: save() blocking time (goal < 5 ms for 2 GiB).
//   - sync save (fsync + xxh3-128 checksums, the defaults): total time against a raw write+fsync
//     of the same bytes into one file (goal >= 0.9x the raw throughput). Removing the previous
//     checkpoint is timed apart, beside an unlink of the raw file: dropping 2 GiB of cached pages
//     is the kernel's cost, paid by whichever deletes the bytes.
// Each figure is the median of --repeat runs. Nothing here asserts on time.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"

namespace {

namespace fs = std::filesystem;
using namespace ckptio;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * 1024;
constexpr uint64_t kGiB = kMiB * 1024;

struct Options {
  uint64_t total_bytes = 2 * kGiB;
  fs::path dir = fs::temp_directory_path();
  int repeat = 3;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "ckptio-bench-checkpoint: %s\n"
               "usage: ckptio-bench-checkpoint [--quick] [--dir DIR] [--repeat N]\n"
               "  --quick      256 MiB instead of 2 GiB\n"
               "  --dir DIR    where checkpoints go (default: $TMPDIR or /tmp); removed at the end\n"
               "  --repeat N   runs per figure, the median is reported (default 3)\n",
               why);
  std::exit(2);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Sizes of a model-like state adding up to `total`.
std::vector<uint64_t> tensor_sizes(uint64_t total) {
  std::vector<uint64_t> sizes;
  uint64_t left = total;
  const uint64_t small = std::min<uint64_t>(1000 * 4 * kKiB, total / 16);
  for (uint64_t b = 0; b + 4 * kKiB <= small; b += 4 * kKiB) sizes.push_back(4 * kKiB);
  left -= sizes.size() * 4 * kKiB;
  for (int i = 0; i < 4 && left >= 64 * kMiB * 2; ++i) {
    sizes.push_back(64 * kMiB);
    left -= 64 * kMiB;
  }
  std::mt19937_64 rng(7);
  while (left > 0) {
    const uint64_t n = std::min<uint64_t>(left, (1 + rng() % 8) * kMiB);
    sizes.push_back(n);
    left -= n;
  }
  return sizes;
}

TensorMap make_state(uint64_t total) {
  TensorMap state;
  size_t i = 0;
  for (uint64_t n : tensor_sizes(total)) {
    Tensor t = Tensor::zeros(DType::U8, {static_cast<int64_t>(n)});
    auto bytes = t.mutable_bytes();
    for (size_t k = 0; k < bytes.size(); k += 4096) bytes[k] = static_cast<std::byte>(i + k);
    state.emplace(fmt::format("layers.{:05d}.weight", i++), std::move(t));
  }
  return state;
}

// Returns the time of the durable write; *unlink_s gets the time to remove the file afterwards
// (the kernel drops its cached pages then), which pruning an old checkpoint pays too.
double raw_write_fsync(const fs::path& file, const TensorMap& state, double* unlink_s) {
  const auto t0 = Clock::now();
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw system_error(errno, "open " + file.string());
  uint64_t offset = 0;
  for (const auto& [name, t] : state) {
    const std::byte* p = t.bytes().data();
    size_t left = t.nbytes();
    while (left > 0) {
      const ssize_t n = ::pwrite(fd, p, std::min<size_t>(left, 1u << 30), static_cast<off_t>(offset));
      if (n <= 0) throw system_error(errno, "pwrite " + file.string());
      p += n;
      left -= static_cast<size_t>(n);
      offset += static_cast<uint64_t>(n);
    }
  }
  if (::fsync(fd) != 0) throw system_error(errno, "fsync " + file.string());
  ::close(fd);
  const double s = seconds_since(t0);
  const auto t1 = Clock::now();
  fs::remove(file);
  *unlink_s = seconds_since(t1);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      opt.total_bytes = 256 * kMiB;
    } else if (a == "--dir" && i + 1 < argc) {
      opt.dir = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc) {
      opt.repeat = std::max(1, std::atoi(argv[++i]));
    } else {
      usage(("unknown argument " + a).c_str());
    }
  }
  try {
    const fs::path work = opt.dir / ("ckptio-bench-checkpoint-" + std::to_string(::getpid()));
    fs::create_directories(work);
    TrainingState state;
    state.model = make_state(opt.total_bytes);
    state.extra = {{"bench", true}};
    uint64_t total = 0;
    for (const auto& [n, t] : *state.model) total += t.nbytes();
    fmt::print("# CheckpointIO: {} tensors, {:.1f} MiB, median of {} runs, in {}\n\n",
               state.model->size(), static_cast<double>(total) / kMiB, opt.repeat, work.string());

    // Limit 1: one memcpy of the same bytes into preallocated, pre-faulted memory.
    std::vector<std::byte> dst(total);
    std::memset(dst.data(), 1, dst.size());
    std::vector<double> memcpy_s;
    for (int r = 0; r < opt.repeat; ++r) {
      const auto t0 = Clock::now();
      size_t off = 0;
      for (const auto& [n, t] : *state.model) {
        std::memcpy(dst.data() + off, t.bytes().data(), t.nbytes());
        off += t.nbytes();
      }
      memcpy_s.push_back(seconds_since(t0));
    }
    dst.clear();
    dst.shrink_to_fit();

    int64_t step = 0;
    auto run_async = [&](SnapshotMode mode, double* first) {
      CheckpointOptions o;
      o.async = true;
      o.snapshot = mode;
      o.keep_n_latest = 1;
      CheckpointIO io(work / (mode == SnapshotMode::Copy ? "copy" : "borrow"), o);
      std::vector<double> blocking;
      for (int r = 0; r <= opt.repeat; ++r) {
        state.running.global_step = ++step;
        const auto t0 = Clock::now();
        io.save(state);
        const double s = seconds_since(t0);
        io.wait();
        if (r == 0 && first != nullptr) {
          *first = s;  // allocates and faults in the staging pool
        } else if (r > 0 || first == nullptr) {
          blocking.push_back(s);
        }
      }
      return median(blocking);
    };
    double copy_first = 0;
    const double copy_blocking = run_async(SnapshotMode::Copy, &copy_first);
    const double borrow_blocking = run_async(SnapshotMode::Borrow, nullptr);

    // Limit 2: raw write+fsync of the same bytes; then the durable synchronous save.
    // Where a synchronous save's time goes, phase by phase (last run with checksums).
    std::vector<std::pair<SavePhase, double>> phases;
    // Like for like: the raw side removes its file outside the clock, so the save runs with
    // retention off and the old checkpoint is pruned outside the clock too, timed on its own.
    std::vector<double> raw_s, unlink_s, sync_s, sync_nosum_s, prune_s;
    for (int r = 0; r < opt.repeat; ++r) {
      double unlink = 0;
      raw_s.push_back(raw_write_fsync(work / "raw.bin", *state.model, &unlink));
      unlink_s.push_back(unlink);
      for (bool checksums : {true, false}) {
        CheckpointOptions o;
        o.keep_n_latest = 0;
        o.checksums = checksums;
        std::vector<std::pair<SavePhase, double>> seen;
        const auto t0 = Clock::now();
        o.on_phase = [&](SavePhase p) { seen.emplace_back(p, seconds_since(t0)); };
        CheckpointIO io(work / "sync", o);
        state.running.global_step = ++step;
        io.save(state);
        (checksums ? sync_s : sync_nosum_s).push_back(seconds_since(t0));
        if (checksums) phases = seen;
        const auto t1 = Clock::now();
        io.prune(1);
        prune_s.push_back(seconds_since(t1));
      }
    }
    const double memcpy_t = median(memcpy_s), raw_t = median(raw_s);
    const double sync_t = median(sync_s), sync_nosum_t = median(sync_nosum_s);
    const double unlink_t = median(unlink_s), prune_t = median(prune_s);
    const double gib = static_cast<double>(total) / kGiB;
    fmt::print("| measurement | time | GiB/s | ratio | goal |\n|---|---:|---:|---:|---|\n");
    fmt::print("| memcpy into preallocated memory (limit) | {:.1f} ms | {:.2f} | 1.00 | |\n",
               memcpy_t * 1e3, gib / memcpy_t);
    fmt::print("| async copy save, blocking (pool reused) | {:.1f} ms | {:.2f} | {:.2f}x memcpy | <= 1.2x |\n",
               copy_blocking * 1e3, gib / copy_blocking, copy_blocking / memcpy_t);
    fmt::print("| async copy save, blocking (first save, allocates the pool) | {:.1f} ms | {:.2f} | {:.2f}x memcpy | |\n",
               copy_first * 1e3, gib / copy_first, copy_first / memcpy_t);
    fmt::print("| async borrow save, blocking | {:.3f} ms | | {:.3f} ms per GiB | < 5 ms for 2 GiB |\n",
               borrow_blocking * 1e3, borrow_blocking * 1e3 / gib);
    fmt::print("| raw write+fsync, one file (limit) | {:.1f} ms | {:.2f} | 1.00 | |\n", raw_t * 1e3,
               gib / raw_t);
    fmt::print("| sync save, fsync + xxh3-128 checksums | {:.1f} ms | {:.2f} | {:.2f}x raw | >= 0.9x |\n",
               sync_t * 1e3, gib / sync_t, raw_t / sync_t);
    fmt::print("| sync save, fsync, no checksums | {:.1f} ms | {:.2f} | {:.2f}x raw | |\n",
               sync_nosum_t * 1e3, gib / sync_nosum_t, raw_t / sync_nosum_t);
    fmt::print("| unlink of the raw file (limit) | {:.1f} ms | | 1.00 | |\n", unlink_t * 1e3);
    fmt::print("| prune(1) of the previous checkpoint | {:.1f} ms | | {:.2f}x unlink | |\n",
               prune_t * 1e3, prune_t / unlink_t);
    fmt::print("\nphases of the last synchronous save with checksums (ms):");
    for (size_t i = 0; i + 1 < phases.size(); ++i) {
      fmt::print(" {} {:.1f}", save_phase_name(phases[i].first),
                 (phases[i + 1].second - phases[i].second) * 1e3);
    }
    fmt::print("\n");
    fs::remove_all(work);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-checkpoint: %s\n", e.what());
    return 1;
  }
  return 0;
}
