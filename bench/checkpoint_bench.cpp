// ckptio-bench-checkpoint: how long a training step is blocked by CheckpointIO::save, and how long
// a durable save takes, against the limits measured in the same run.
//
// State: a model-like mix (a few 64 MiB tensors, many of 1-8 MiB, a thousand of 4 KiB), 2 GiB
// (--quick: 256 MiB), passed as the `model` component.
//   - async copy mode: save() blocking time (the parallel copy into the reused staging pool)
//     against a memcpy of the same bytes into preallocated, pre-faulted, page-aligned memory (the
//     pool's kind), in 8 MiB pieces, the faster of as many threads as CheckpointIO's staging copy
//     uses and one thread. The first save, which allocates the pool, is shown apart.
//   - async borrow mode: save() blocking time.
//   - sync save (fsync + xxh3-128 checksums, the defaults): total time against the raw write
//     limit of the same bytes (pwrite by one thread and by the async writer's threads in its
//     chunk size, buffered (with and without early writeback) and O_DIRECT, whichever is fastest,
//     + fdatasync + folder fsync). Removing the previous
//     checkpoint is timed apart, beside an unlink of the raw file: dropping the cached pages is
//     the kernel's cost, paid by whichever deletes the bytes.
// Each figure is the median of --repeat runs.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
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

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_options(
      argc, argv,
      {"ckptio-bench-checkpoint", "CheckpointIO save: blocking time and durable save against the limits",
       "256 MiB instead of 2 GiB", 3});
  try {
    WorkDir work(opt.dir, "ckptio-bench-checkpoint-");
    TrainingState state;
    state.model = make_state(opt.quick ? 256 * kMiB : 2 * kGiB);
    state.extra = R"({"bench": true})";
    uint64_t total = 0;
    std::vector<std::span<const std::byte>> sources;
    for (const auto& [n, t] : *state.model) {
      total += t.nbytes();
      sources.push_back(t.bytes());
    }
    const int R = opt.repeat;

    // Limit 1: the staging copy's shape, into preallocated, pre-faulted, page-aligned memory like
    // the staging pool; by the copy's threads and by one, each run between two copy saves so that
    // a change of load on the machine hits both sides alike.
    const unsigned copy_threads = default_worker_threads();  // CheckpointOptions::threads = 0
    std::vector<double> memcpy_parallel, memcpy_one;
    std::optional<PrefaultedMemory> memcpy_dst(std::in_place, parallel_memcpy_bytes(sources));
    auto measure_memcpy = [&] {
      memcpy_parallel.push_back(time_once([&] { parallel_memcpy(sources, memcpy_dst->data(), copy_threads); }));
      if (copy_threads > 1) {
        memcpy_one.push_back(time_once([&] { parallel_memcpy(sources, memcpy_dst->data(), 1); }));
      }
    };

    int64_t step = 0;
    auto run_async = [&](SnapshotMode mode, double* first, const std::function<void()>& between) {
      CheckpointOptions o;
      o.async = true;
      o.snapshot = mode;
      o.keep_n_latest = 1;
      CheckpointIO io(work / (mode == SnapshotMode::Copy ? "copy" : "borrow"), o);
      std::vector<double> blocking;
      for (int r = 0; r <= R; ++r) {
        state.running.global_step = ++step;
        const auto t0 = Clock::now();
        io.save(state);
        const double s = seconds_since(t0);
        io.wait();
        if (r == 0 && first != nullptr) {
          *first = s;  // allocates and faults in the staging pool
        } else if (r > 0 || first == nullptr) {
          blocking.push_back(s);
          if (between) between();
        }
      }
      return median(blocking);
    };
    double copy_first = 0;
    const double copy_blocking = run_async(SnapshotMode::Copy, &copy_first, measure_memcpy);
    memcpy_dst.reset();
    const double borrow_blocking = run_async(SnapshotMode::Borrow, nullptr, {});
    double memcpy_t = median(memcpy_parallel);
    std::string memcpy_note = fmt::format("{} threads x 8 MiB pieces", copy_threads);
    if (!memcpy_one.empty()) {
      const double one = median(memcpy_one);
      memcpy_note = one < memcpy_t
                        ? fmt::format("1 thread x 8 MiB pieces ({} threads: {:.3f} s)", copy_threads, memcpy_t)
                        : fmt::format("{} threads x 8 MiB pieces (1 thread: {:.3f} s)", copy_threads, one);
      memcpy_t = std::min(memcpy_t, one);
    }

    // Limit 2: the raw write of the same bytes, interleaved with the durable synchronous saves.
    // Like for like: the raw side removes its file outside the clock, so the save runs with
    // retention off and the old checkpoint is pruned outside the clock too, timed on its own.
    const std::vector<RawFile> raw = {{work / "raw.bin", sources}};
    WriteLimit write_limit;
    std::vector<double> sync_s, sync_nosum_s, prune_s;
    std::vector<std::pair<SavePhase, double>> phases;  // the last save with checksums
    // Each save follows the removal of a 2 GiB checkpoint (the prune after the save before it,
    // or a raw file's), between the raw write's variants.
    auto save = [&](bool checksums) {
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
      prune_s.push_back(time_once([&] { io.prune(1); }));
    };
    for (int r = 0; r < R; ++r) {
      write_limit.measure(raw, {[&] { save(true); }, [&] { save(false); }});
    }

    Report report("ckptio-bench-checkpoint", "CheckpointIO blocking time and durable save");
    report.context(fmt::format("{} tensors, {:.1f} MiB, median of {} runs.", state.model->size(),
                               static_cast<double>(total) / kMiB, R));
    report.set("quick", opt.quick);
    const std::string kCopy = "memcpy into pre-faulted memory", kWrite = "raw write+fsync",
                      kUnlink = "unlink of the raw file";
    report.add({Group::Limit, kCopy, memcpy_t, total, "", "",
                "the faster of the staging copy's threads and one: " + memcpy_note});
    report.add({Group::Ckptio, "async copy save, blocking (pool reused)", copy_blocking, total, kCopy,
                "", "parallel copy into the staging pool"});
    report.add({Group::Reference, "async copy save, blocking (first save)", copy_first, total, "", "",
                "allocates and faults in the staging pool"});
    report.add({Group::Ckptio, "async borrow save, blocking", borrow_blocking, 0, "", "",
                "no copy: the caller keeps the tensors unchanged until the save is done"});
    report.add({Group::Limit, kWrite, write_limit.seconds(), total, "", "",
                write_limit.description() + ", one file"});
    report.add({Group::Ckptio, "sync save, fsync + xxh3-128 checksums", median(sync_s), total, kWrite,
                "", "the defaults"});
    report.add({Group::Ckptio, "sync save, fsync, no checksums", median(sync_nosum_s), total, kWrite,
                "", ""});
    report.add({Group::Limit, kUnlink, write_limit.unlink_seconds(), 0, "", "", "after a buffered raw write"});
    report.add({Group::Ckptio, "prune(1) of the previous checkpoint", median(prune_s), 0, kUnlink, "",
                ""});
    report.goal(Goal::ratio("async copy save blocking time <= 1.2x the memcpy (speed >= 0.83x)",
                 "async copy save, blocking (pool reused)", kCopy, 1 / 1.2));
    report.goal(Goal::at_most("async borrow save, blocking", "async borrow save, blocking", 5, 1e3, "ms"));
    report.goal(Goal::ratio("sync save (defaults) / raw write+fsync", "sync save, fsync + xxh3-128 checksums",
                 kWrite, 0.9));
    std::string phase_line = "Phases of the last synchronous save with checksums (ms):";
    for (size_t i = 0; i + 1 < phases.size(); ++i) {
      phase_line += fmt::format(" {} {:.1f}", save_phase_name(phases[i].first),
                                (phases[i + 1].second - phases[i].second) * 1e3);
    }
    report.note(phase_line);
    report.emit(opt);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-checkpoint: %s\n", e.what());
    return 1;
  }
}
