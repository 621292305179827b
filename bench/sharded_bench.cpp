// ckptio-bench-sharded: loading a state split into 4 safetensors shards into caller-owned
// buffers, sequentially (1 thread) and in parallel, and saving it durably, beside the best raw
// I/O of the same files measured in the same run.
//
// Like for like: every reader fills pre-faulted, page-aligned destination memory from files that
// were just written (warm page cache); the raw read is the fastest of one thread and as many
// threads as ckptio's parallel load (chunks handed out in order, or a share each), with each file
// at a page boundary so that every byte keeps its offset within a page (the fastest kernel copy;
// where the loads' bytes land relative to the file is up to the file's layout). The raw write
// writes the same number of bytes into as many new files by one thread and by the async writer's
// threads in its chunk size, buffered and O_DIRECT (the fastest counts), each file fdatasynced
// and the folder fsynced. Every save, like the raw write, goes to a folder emptied outside the
// clock (replacing the previous save's shards would add their deletion to its time), and the
// two saves take turns going first. Each figure is the median of --repeat runs.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/load.h"
#include "ckptio/sharded.h"
#include "ckptio/tensor.h"
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

// The raw write's files: as many as the shards, of the same sizes, filled from the tensors'
// bytes in order (and zeros for the headers' share).
std::vector<RawFile> raw_files_like(const WorkDir& work, const ShardedWriteResult& written,
                                    const std::vector<NamedTensor>& named,
                                    const std::vector<std::byte>& zeros) {
  std::vector<RawFile> files;
  size_t t = 0;
  uint64_t in_t = 0;
  for (size_t s = 0; s < written.shards.size(); ++s) {
    RawFile f{work / fmt::format("raw-{}.bin", s), {}};
    uint64_t left = written.shards[s].size;
    while (left > 0 && t < named.size()) {
      const auto bytes = named[t].view.bytes;
      const uint64_t n = std::min<uint64_t>(left, bytes.size() - in_t);
      f.pieces.push_back(bytes.subspan(in_t, n));
      left -= n;
      in_t += n;
      if (in_t == bytes.size()) {
        ++t;
        in_t = 0;
      }
    }
    if (left > 0) f.pieces.push_back(std::span(zeros.data(), std::min<size_t>(left, zeros.size())));
    files.push_back(std::move(f));
  }
  return files;
}

}  // namespace

int main(int argc, char** argv) {
  int threads_option = 0;
  const Options o = parse_options(
      argc, argv,
      {"ckptio-bench-sharded", "sharded load into caller buffers and durable save against the raw limits",
       "256 MiB instead of 2 GiB", 5},
      [&](CLI::App& app) {
        app.add_option("--threads", threads_option,
                       "threads of the parallel load and raw read (default: hardware, max 8)")
            ->check(CLI::Range(1, 1024));
      });
  // load_checkpoint's default: min(hardware threads, 8).
  const int threads = threads_option > 0 ? threads_option : static_cast<int>(default_worker_threads());
  try {
    WorkDir work(o.dir, "ckptio-bench-sharded-");
    const fs::path dir = work / "model";
    // Per shard: 2 large and 24 smaller tensors, so that 4 shards of exactly total/4 come out.
    const uint64_t total_bytes = o.quick ? 256 * kMiB : 2 * kGiB;
    const uint64_t shard_bytes = total_bytes / 4;
    const uint64_t big = shard_bytes / 8;                 // 64 MiB at 2 GiB
    const uint64_t small = (shard_bytes - 2 * big) / 24;  // 16 MiB at 2 GiB
    std::vector<Tensor> tensors;
    std::vector<NamedTensor> named;
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
    wo.sync = false;  // the files the loads read only need to exist
    const ShardedWriteResult written = save_sharded(dir, named, wo);
    if (written.shards.size() != 4) throw Error(ErrorCode::Internal, "expected 4 shards");
    uint64_t file_bytes = 0;
    std::vector<fs::path> shard_paths;
    for (const auto& s : written.shards) {
      file_bytes += s.size;
      shard_paths.push_back(dir / s.name);
    }
    uint64_t data_bytes = 0;
    for (const auto& n : named) data_bytes += n.view.nbytes();

    // Durable saves with one writer thread and with the default, interleaved with the raw write.
    const fs::path save_dir = work / "saved";
    const std::vector<std::byte> zeros(file_bytes - data_bytes);
    const std::vector<RawFile> raw_files = raw_files_like(work, written, named, zeros);
    WriteLimit write_limit;
    std::vector<double> save_seq, save_par;
    auto save_with = [&](int n) {
      if (fs::exists(save_dir)) {  // the folder stays, like the raw write's
        for (const auto& e : fs::directory_iterator(save_dir)) fs::remove_all(e.path());
      }
      ShardedWriteOptions so = wo;
      so.sync = true;
      so.threads = n;
      const auto start = Clock::now();
      save_sharded(save_dir, named, so);
      return seconds_since(start);
    };
    for (int r = 0; r < std::min(o.repeat, 3); ++r) {
      write_limit.measure(raw_files, {[&] { save_seq.push_back(save_with(1)); },
                                      [&] { save_par.push_back(save_with(0)); }});
    }
    fs::remove_all(save_dir);
    tensors.clear();  // free the source state before the loads

    // One pre-faulted, page-aligned destination block, cut into per-tensor buffers (caller-owned;
    // every tensor here is a whole number of pages, so each buffer is page-aligned like a
    // framework's tensor storage, not 16 bytes into a page like a plain malloc block).
    PrefaultedMemory dest(data_bytes);
    std::vector<LoadTarget> targets;
    uint64_t off = 0;
    for (const auto& n : named) {
      targets.push_back({n.name, DType::F32, n.view.shape, std::span(dest.data() + off, n.view.nbytes())});
      off += n.view.nbytes();
    }
    const size_t chunk = parallel_reader_chunk_bytes();
    auto load_with = [&](int n) {
      LoadOptions lo;
      lo.threads = n;
      const LoadReport r = load_checkpoint(dir, targets, lo);
      if (!r.ok() || r.bytes_read != data_bytes) throw Error(ErrorCode::Internal, "bad load");
    };
    raw_read_fresh(shard_paths, {1, chunk});  // warm the page cache
    load_with(threads);
    ReadLimit read_limit({static_cast<unsigned>(threads), chunk});
    std::vector<double> load_seq, load_par, views;
    for (int r = 0; r < o.repeat; ++r) {
      read_limit.measure_prefaulted(shard_paths);
      load_seq.push_back(time_once([&] { load_with(1); }));
      load_par.push_back(time_once([&] { load_with(threads); }));
      views.push_back(time_once([&] {
        const LoadedCheckpoint c = load_checkpoint(dir);
        if (c.tensors.size() != named.size()) throw Error(ErrorCode::Internal, "bad view load");
      }));
    }
    // The last load must really have delivered the bytes.
    for (size_t i = 0; i < targets.size(); ++i) {
      if (targets[i].buffer[targets[i].buffer.size() - 1] != std::byte(static_cast<unsigned char>(i + 1))) {
        throw Error(ErrorCode::Internal, "wrong bytes loaded into " + targets[i].name);
      }
    }

    Report report("ckptio-bench-sharded", "a 4-shard folder loaded into caller buffers and saved");
    report.context(fmt::format(
        "{:.0f} MiB in {} tensors, 4 shards, warm page cache, {} threads for the parallel rows, "
        "median of {} runs (saves: {}), {} hardware threads.",
        static_cast<double>(data_bytes) / kMiB, named.size(), threads, o.repeat,
        std::min(o.repeat, 3), std::thread::hardware_concurrency()));
    report.set("quick", o.quick);
    const std::string kRead = "raw read (warm cache)", kWrite = "raw write+fsync";
    report.add({Group::Limit, kRead, read_limit.seconds(), file_bytes, "", "",
                "into pre-faulted memory, " + read_limit.description()});
    report.add({Group::Ckptio, "load_checkpoint into buffers, threads=1", median(load_seq), data_bytes,
                kRead, "", "sequential"});
    report.add({Group::Ckptio, fmt::format("load_checkpoint into buffers, threads={}", threads),
                median(load_par), data_bytes, kRead, "", "parallel"});
    report.add({Group::Reference, "load_checkpoint, no target", median(views), 0, "", "",
                "zero-copy views, no tensor byte touched"});
    report.add({Group::Limit, kWrite, write_limit.seconds(), file_bytes, "", "",
                write_limit.description() + ", 4 files"});
    report.add({Group::Ckptio, "save_sharded, durable, 1 writer thread", median(save_seq), data_bytes,
                kWrite, "", ""});
    report.add({Group::Ckptio, "save_sharded, durable, default writer threads", median(save_par),
                data_bytes, kWrite, "", ""});
    report.goal(Goal::ratio("parallel load / raw read", fmt::format("load_checkpoint into buffers, threads={}", threads),
                 kRead, 0.9));
    report.goal(Goal::ratio("durable save (default writer threads) / raw write+fsync",
                            "save_sharded, durable, default writer threads", kWrite, 0.9));
    report.emit(o);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-sharded: %s\n", e.what());
    return 1;
  }
}
