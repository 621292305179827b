// ckptio-bench-sharded: loading a state split into 4 safetensors shards into caller-owned
// buffers, sequentially (1 thread) and in parallel, beside a raw read of the same files measured
// in the same run.
//
//   ckptio-bench-sharded [--quick] [--dir DIR] [--repeat N] [--threads N]
//
// Like for like: every reader fills the same pre-faulted destination memory from files that were
// just written (warm page cache), so the comparison is about the read path, not page faults or the
// disk. "raw sequential" is one pread loop over the files; "raw parallel" splits the same bytes
// over the same number of threads as ckptio's parallel load. Each figure is the median of
// --repeat runs. Nothing here asserts on time.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "ckptio/error.h"
#include "ckptio/load.h"
#include "ckptio/sharded.h"
#include "ckptio/tensor.h"

namespace {

namespace fs = std::filesystem;
using namespace ckptio;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

struct Options {
  uint64_t total_bytes = 2 * kGiB;
  fs::path dir = fs::temp_directory_path();
  int repeat = 5;
  int threads = 0;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "ckptio-bench-sharded: %s\n"
               "usage: ckptio-bench-sharded [--quick] [--dir DIR] [--repeat N] [--threads N]\n"
               "  --quick      256 MiB instead of 2 GiB\n"
               "  --dir DIR    where the shards go (default: $TMPDIR or /tmp); removed at the end\n"
               "  --repeat N   runs per figure, the median is reported (default 5)\n"
               "  --threads N  threads of the parallel load and raw read (default: hardware, max 8)\n",
               why);
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--quick") {
      o.total_bytes = 256 * kMiB;
    } else if (a == "--dir" && i + 1 < argc) {
      o.dir = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc) {
      o.repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--threads" && i + 1 < argc) {
      o.threads = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--help" || a == "-h") {
      usage("sharded load into caller buffers against raw reads of the same files");
    } else {
      usage(("unknown argument '" + std::string(a) + "'").c_str());
    }
  }
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double time_median(int repeat, F&& f) {
  std::vector<double> times;
  for (int r = 0; r < repeat; ++r) {
    const auto start = Clock::now();
    f();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return median(times);
}

// pread of [offset, offset+n) of one file into dst, in 8 MiB calls.
void raw_read(int fd, uint64_t offset, std::byte* dst, uint64_t n) {
  uint64_t done = 0;
  while (done < n) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(8 * kMiB, n - done));
    const ssize_t got = ::pread(fd, dst + done, want, static_cast<off_t>(offset + done));
    if (got <= 0) throw Error(ErrorCode::IoError, "raw read failed");
    done += static_cast<uint64_t>(got);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  const int threads = o.threads > 0 ? o.threads
                                    : static_cast<int>(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
  const fs::path dir = o.dir / ("ckptio-bench-sharded-" + io::random_suffix());
  try {
    // Per shard: 2 large and 24 smaller tensors, so that 4 shards of exactly total/4 come out.
    const uint64_t shard_bytes = o.total_bytes / 4;
    const uint64_t big = shard_bytes / 8;       // 64 MiB at 2 GiB
    const uint64_t small = (shard_bytes - 2 * big) / 24;  // 16 MiB at 2 GiB
    std::vector<Tensor> tensors;
    std::vector<NamedTensor> named;
    std::vector<LoadTarget> targets;
    for (int s = 0; s < 4; ++s) {
      for (int k = 0; k < 26; ++k) {
        const uint64_t bytes = k < 2 ? big : small;
        Tensor t = Tensor::zeros(DType::F32, {static_cast<int64_t>(bytes / 4)});
        std::memset(t.mutable_bytes().data(), s * 26 + k + 1, t.nbytes());
        tensors.push_back(std::move(t));
      }
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      named.push_back({"layers." + std::to_string(i) + ".weight", tensors[i].view()});
    }
    ShardedWriteOptions wo;
    wo.max_shard_size = shard_bytes;
    wo.sync = false;  // this measures loading; the files only need to exist
    const ShardedWriteResult written = save_sharded(dir, named, wo);
    if (written.shards.size() != 4) throw Error(ErrorCode::Internal, "expected 4 shards");
    // Durable saves (fsync of every shard, the index and the folder) with one writer thread and
    // with several, to show whether writing shards in parallel pays on this machine.
    const fs::path save_dir = o.dir / ("ckptio-bench-sharded-save-" + io::random_suffix());
    const int save_repeat = std::min(o.repeat, 3);
    auto save_with = [&](int n) {
      ShardedWriteOptions so = wo;
      so.sync = true;
      so.threads = n;
      save_sharded(save_dir, named, so);
    };
    const double t_save_seq = time_median(save_repeat, [&] { save_with(1); });
    const double t_save_par = time_median(save_repeat, [&] { save_with(0); });
    {
      std::error_code ec;
      fs::remove_all(save_dir, ec);
    }
    tensors.clear();  // free the source state before the loads

    // One pre-faulted destination block, cut into per-tensor buffers (caller-owned).
    uint64_t data_bytes = 0;
    for (const auto& n : named) data_bytes += n.view.nbytes();
    std::vector<std::byte> dest(data_bytes);
    std::memset(dest.data(), 0, dest.size());
    uint64_t off = 0;
    for (const auto& n : named) {
      targets.push_back({n.name, DType::F32, n.view.shape, std::span(dest.data() + off, n.view.nbytes())});
      off += n.view.nbytes();
    }

    // Raw reads of the same files into the same memory (the shards' bytes, headers included).
    std::vector<int> fds;
    std::vector<uint64_t> sizes;
    uint64_t file_bytes = 0;
    for (const auto& s : written.shards) {
      const int fd = ::open((dir / s.name).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw Error(ErrorCode::IoError, "open failed");
      fds.push_back(fd);
      sizes.push_back(s.size);
      file_bytes += s.size;
    }
    std::vector<std::byte> raw_dest(file_bytes);
    std::memset(raw_dest.data(), 0, raw_dest.size());
    auto raw_sequential = [&] {
      uint64_t at = 0;
      for (size_t f = 0; f < fds.size(); ++f) {
        raw_read(fds[f], 0, raw_dest.data() + at, sizes[f]);
        at += sizes[f];
      }
    };
    auto raw_parallel = [&] {
      // Even split of all bytes over the threads, each its contiguous share, 8 MiB preads.
      const uint64_t share = (file_bytes + threads - 1) / threads;
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          uint64_t begin = t * share;
          const uint64_t end = std::min(file_bytes, begin + share);
          uint64_t file_start = 0;
          for (size_t f = 0; f < fds.size() && begin < end; ++f) {
            const uint64_t file_end = file_start + sizes[f];
            if (begin < file_end) {
              const uint64_t n = std::min(end, file_end) - begin;
              raw_read(fds[f], begin - file_start, raw_dest.data() + begin, n);
              begin += n;
            }
            file_start = file_end;
          }
        });
      }
      for (auto& th : pool) th.join();
    };
    auto load_with = [&](int n) {
      LoadOptions lo;
      lo.threads = n;
      const LoadReport r = load_checkpoint(dir, targets, lo);
      if (!r.ok() || r.bytes_read != data_bytes) throw Error(ErrorCode::Internal, "bad load");
    };

    raw_sequential();  // warm the page cache
    load_with(threads);
    const double t_raw_seq = time_median(o.repeat, raw_sequential);
    const double t_raw_par = time_median(o.repeat, raw_parallel);
    const double t_seq = time_median(o.repeat, [&] { load_with(1); });
    const double t_par = time_median(o.repeat, [&] { load_with(threads); });
    const double t_views = time_median(o.repeat, [&] {
      const LoadedCheckpoint c = load_checkpoint(dir);
      if (c.tensors.size() != named.size()) throw Error(ErrorCode::Internal, "bad view load");
    });
    // Check the last load really delivered the bytes.
    for (size_t i = 0; i < targets.size(); ++i) {
      if (targets[i].buffer[targets[i].buffer.size() - 1] != std::byte(static_cast<unsigned char>(i + 1))) {
        throw Error(ErrorCode::Internal, "wrong bytes loaded into " + targets[i].name);
      }
    }
    for (int fd : fds) ::close(fd);

    const double raw_best = std::min(t_raw_seq, t_raw_par);
    const auto gbps = [&](uint64_t bytes, double t) { return static_cast<double>(bytes) / t / 1e9; };
    fmt::print("# ckptio-bench-sharded\n\n");
    fmt::print("{:.0f} MiB in {} tensors, 4 shards, warm page cache, {} threads for the parallel "
               "rows, median of {} runs, {} hardware threads.\n\n",
               static_cast<double>(data_bytes) / kMiB, named.size(), threads, o.repeat,
               std::thread::hardware_concurrency());
    fmt::print("| method | time (s) | GB/s | vs best raw read |\n|---|---:|---:|---:|\n");
    fmt::print("| raw read, sequential (pread, 1 thread) | {:.3f} | {:.2f} | {:.2f}x |\n", t_raw_seq,
               gbps(file_bytes, t_raw_seq), raw_best / t_raw_seq);
    fmt::print("| raw read, parallel ({} threads) | {:.3f} | {:.2f} | {:.2f}x |\n", threads, t_raw_par,
               gbps(file_bytes, t_raw_par), raw_best / t_raw_par);
    fmt::print("| load_checkpoint into buffers, sequential (threads=1) | {:.3f} | {:.2f} | {:.2f}x |\n",
               t_seq, gbps(data_bytes, t_seq), raw_best / t_seq);
    fmt::print("| load_checkpoint into buffers, parallel (threads={}) | {:.3f} | {:.2f} | {:.2f}x |\n",
               threads, t_par, gbps(data_bytes, t_par), raw_best / t_par);
    fmt::print("| load_checkpoint, no target (zero-copy views, no bytes touched) | {:.3f} | - | - |\n",
               t_views);
    fmt::print("| save_sharded, durable, 1 writer thread | {:.3f} | {:.2f} | - |\n", t_save_seq,
               gbps(data_bytes, t_save_seq));
    fmt::print("| save_sharded, durable, default writer threads | {:.3f} | {:.2f} | - |\n", t_save_par,
               gbps(data_bytes, t_save_par));
    fmt::print("\nGoal: parallel load >= 0.9x the raw read: {:.2f}x ({}). Parallel vs sequential "
               "load: {:.2f}x.\n",
               raw_best / t_par, raw_best / t_par >= 0.9 ? "met" : "NOT met", t_seq / t_par);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    std::fprintf(stderr, "ckptio-bench-sharded: %s\n", e.what());
    return 1;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
