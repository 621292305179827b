#include "dist_io_worker.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <thread>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "ckptio/dist.h"
#include "ckptio/dist_checkpoint_io.h"
#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/mpi_communicator.h"
#include "common/raw_limits.h"
#include "common/timing.h"
#include "common/work_dir.h"

namespace ckptio::bench::dist_io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kBlock = 4096;
// Block tensors: rows a multiple of 4. Flat tensors: rows 2 mod 4 and even columns, so that the
// element count divides by 4 but partitions of 4 start inside a row, as ZeRO's do.
constexpr int64_t kBlockCols = 2048;
constexpr int64_t kFlatCols = 1002;

Spec sized_spec(std::string name, uint64_t bytes, bool flat) {
  const int64_t cols = flat ? kFlatCols : kBlockCols;
  const int64_t rows = static_cast<int64_t>(bytes / static_cast<uint64_t>(cols * 2));
  return {std::move(name), flat ? rows / 4 * 4 + 2 : std::max<int64_t>(4, rows / 4 * 4), cols, flat};
}

struct Free {
  void operator()(std::byte* p) const { std::free(p); }
};
using Bytes = std::unique_ptr<std::byte, Free>;

// 4 KiB aligned (so that O_DIRECT writes go straight from it) and faulted in.
Bytes aligned_bytes(uint64_t n, std::byte fill) {
  const size_t size = std::max<size_t>(kBlock, (n + kBlock - 1) / kBlock * kBlock);
  auto* p = static_cast<std::byte*>(std::aligned_alloc(kBlock, size));
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, static_cast<int>(fill), size);
  return Bytes(p);
}

dist::ShardedTensor shard_of(const Spec& s, int rank, int world) {
  const Shape shape{s.rows, s.cols};
  if (s.flat) return dist::ShardedTensor::zero_partition(s.name, DType::BF16, shape, rank, world);
  // Rows left over (3 ranks) go one each to the first ranks.
  const int64_t base = s.rows / world, extra = s.rows % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  const int64_t rows = base + (rank < extra ? 1 : 0);
  return dist::ShardedTensor::block(s.name, DType::BF16, shape, {begin, 0}, {rows, s.cols});
}

// The content rank `rank` of `world` holds of tensor i: incompressible, and reproducible so that a
// load from 4 ranks' checkpoint can be checked.
uint64_t seed_of(size_t i, int rank, int world) {
  return (static_cast<uint64_t>(i) << 16) | (static_cast<uint64_t>(world) << 8) |
         static_cast<uint64_t>(rank);
}

// One rank's part of every tensor, laid end to end in one buffer (like a flat parameter buffer).
struct Shard {
  Bytes memory;
  uint64_t bytes = 0;
  std::vector<dist::ShardedTensor> tensors;
  std::vector<std::span<std::byte>> spans;
};

Shard make_shard(const std::vector<Spec>& specs, int rank, int world, bool fill) {
  Shard s;
  std::vector<uint64_t> offsets;
  for (const Spec& spec : specs) {
    s.tensors.push_back(shard_of(spec, rank, world));
    offsets.push_back(s.bytes);
    s.bytes += s.tensors.back().local_nbytes();
  }
  s.memory = aligned_bytes(s.bytes, std::byte{0});
  for (size_t i = 0; i < specs.size(); ++i) {
    s.spans.emplace_back(s.memory.get() + offsets[i], s.tensors[i].local_nbytes());
    if (fill) fill_pseudo_random(s.spans[i].data(), s.spans[i].size(), seed_of(i, rank, world));
  }
  return s;
}

double max_over(MPI_Comm c, double v) {
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, c);
  return v;
}

uint64_t sum_over(MPI_Comm c, uint64_t v) {
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_UINT64_T, MPI_SUM, c);
  return v;
}

// Every figure: all ranks start together (barrier), the slowest rank's time counts.
double timed(MPI_Comm c, const std::function<void()>& fn) {
  MPI_Barrier(c);
  return max_over(c, time_once(fn));
}

// A timed step that may be refused (O_DIRECT on tmpfs): nullopt when any rank was refused.
std::optional<double> timed_maybe(MPI_Comm c, const std::function<std::optional<double>()>& fn) {
  MPI_Barrier(c);
  const auto s = fn();
  const double v = max_over(c, s ? *s : std::numeric_limits<double>::infinity());
  return v == std::numeric_limits<double>::infinity() ? std::nullopt : std::optional<double>(v);
}

json seconds_json(const std::vector<double>& v) { return v.empty() ? json(nullptr) : json(median(v)); }

// Ranks with nothing to do wait here without spinning, so that the ranks that work have the cores.
void idle_barrier() {
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  for (int done = 0; MPI_Test(&req, &done, MPI_STATUS_IGNORE), !done;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// ---- The asynchronous save -----------------------------------------------------------------------
// dist::CheckpointIO with async copy: `save` returns once the rank's shard is copied into the
// staging pool (the training step's stall); `wait` returns once that save is committed. The save's
// collectives run on a background thread, which MPI allows only under MPI_THREAD_MULTIPLE: without
// it the row says "not measured".
bool g_mpi_thread_multiple = false;

struct AsyncSave {
  std::function<void(int step)> save;
  std::function<void()> wait;
};

AsyncSave make_async_save(dist::Communicator& comm, const fs::path& dir,
                          std::span<const dist::SaveItem> items) {
  if (!g_mpi_thread_multiple) return {};
  dist::CheckpointIOOptions options;
  options.async = true;
  options.snapshot = SnapshotMode::Copy;
  options.keep_n_latest = 1;
  auto io = std::make_shared<dist::CheckpointIO>(comm, dir, options);
  auto state = std::make_shared<dist::TrainingState>();
  state->model = dist::ComponentState{{items.begin(), items.end()}, "{}"};
  return {[io, state](int step) {
            state->running.global_step = step;
            (void)io->save(*state);
          },
          [io] { io->wait(); }};
}

// The stall and its limit under the same conditions, interleaved: every rank starts together
// (barrier), the slowest rank counts. The limit copies the same tensors (the same spans, 8 MiB
// pieces, the same number of threads as the staging copy) into pre-faulted memory; the save copies
// them into its staging pool, pre-faulted by the first save, which is left out of both.
struct Staging {
  double memcpy_s = 0;
  std::optional<double> blocking_s;
};

Staging measure_staging(MPI_Comm c, int repeat, const AsyncSave& async,
                        const std::function<void()>& memcpy_shard) {
  std::vector<double> copy, blocking;
  for (int r = 0; r <= repeat; ++r) {
    const double m = timed(c, memcpy_shard);
    if (r > 0) copy.push_back(m);  // the first one faults in the page tables of its source
    if (!async.save) continue;
    const double s = timed(c, [&] { async.save(r); });
    async.wait();
    if (r > 0) blocking.push_back(s);  // the first save allocates and faults in its staging memory
  }
  Staging out;
  out.memcpy_s = median(copy);
  if (!blocking.empty()) out.blocking_s = median(blocking);
  return out;
}
// -------------------------------------------------------------------------------------------------

// Load on 2 ranks what 4 saved: rank r asks for its half of every tensor (row blocks, ZeRO
// partitions of 2) into pre-faulted buffers, against pread of the same files, the ones ranks 2r
// and 2r+1 wrote, by as many threads into pre-faulted memory. Run by ranks 0 and 1 only.
json measure_load(MPI_Comm c, int r, const std::vector<Spec>& specs, const fs::path& ckpt, int repeat) {
  constexpr int kM = 2;
  Shard want = make_shard(specs, r, kM, false);
  std::vector<dist::LoadItem> items;
  for (size_t i = 0; i < specs.size(); ++i) items.push_back({want.tensors[i], want.spans[i]});

  std::vector<fs::path> files;
  uint64_t raw_bytes = 0, padded = 0;
  const dist::Reader reader = dist::Reader::open(ckpt);
  for (const dist::IndexFile& f : reader.index().files) {
    if (f.rank / 2 != r) continue;
    files.push_back(ckpt / f.name);
    raw_bytes += f.size;
    padded += (f.size + kBlock - 1) / kBlock * kBlock;
  }
  Bytes raw = aligned_bytes(padded, std::byte{0});
  const std::span<std::byte> raw_span(raw.get(), padded);
  const ReadShape shape{parallel_reader_threads(), parallel_reader_chunk_bytes()};

  // Once untimed: the load must give back exactly what ranks 2r and 2r+1 saved.
  const dist::LoadReport loaded = dist::load(ckpt, items);
  std::vector<std::byte> expected;
  for (size_t i = 0; i < specs.size(); ++i) {
    expected.clear();
    for (int s = 2 * r; s < 2 * r + 2; ++s) {
      const size_t n = shard_of(specs[i], s, 4).local_nbytes();
      expected.resize(expected.size() + n);
      fill_pseudo_random(expected.data() + expected.size() - n, n, seed_of(i, s, 4));
    }
    if (expected.size() != want.spans[i].size() ||
        std::memcmp(expected.data(), want.spans[i].data(), expected.size()) != 0) {
      throw Error(ErrorCode::Corrupt, "rank " + std::to_string(r) + " of 2: '" + specs[i].name +
                                          "' loaded from 4 ranks' checkpoint differs from what they saved");
    }
  }

  auto read_direct = [&]() -> std::optional<double> {
    const auto t0 = Clock::now();
    uint64_t at = 0;
    for (const fs::path& f : files) {
      const uint64_t n = (fs::file_size(f) + kBlock - 1) / kBlock * kBlock;
      if (!raw_direct_read(f, raw_span.subspan(at, n), shape)) return std::nullopt;
      at += n;
    }
    return seconds_since(t0);
  };
  std::vector<double> raw_warm, load_warm, open_warm, read_warm, raw_cold, raw_cold_direct, load_cold;
  for (int k = 0; k < repeat; ++k) {
    raw_warm.push_back(timed(c, [&] { raw_parallel_read(files, raw_span, shape); }));
    load_warm.push_back(timed(c, [&] { (void)dist::load(ckpt, items); }));
    // The load's two parts apart: the index (read, parsed, validated), the reads.
    open_warm.push_back(timed(c, [&] { (void)dist::Reader::open(ckpt); }));
    read_warm.push_back(timed(c, [&] { (void)reader.read(items); }));
  }
  // Dropping the page cache is the whole machine's: rank 0 does it, the barrier in timed() waits.
  auto drop = [&] {
    int ok = r == 0 ? static_cast<int>(drop_caches()) : 0;
    MPI_Bcast(&ok, 1, MPI_INT, 0, c);
    return ok != 0;
  };
  bool cold = true, direct = true;
  for (int k = 0; k < repeat && cold; ++k) {
    if (!(cold = drop())) break;
    raw_cold.push_back(timed(c, [&] { raw_parallel_read(files, raw_span, shape); }));
    if (direct && drop()) {
      if (const auto d = timed_maybe(c, read_direct)) {
        raw_cold_direct.push_back(*d);
      } else {
        direct = false;
      }
    }
    (void)drop();
    load_cold.push_back(timed(c, [&] { (void)dist::load(ckpt, items); }));
  }
  return {{"from", 4},
           {"to", kM},
           {"bytes", sum_over(c, loaded.bytes_read)},
           {"reads", sum_over(c, loaded.reads)},
           {"raw_bytes", sum_over(c, raw_bytes)},
           {"raw_files", sum_over(c, files.size())},
           {"threads", shape.threads},
           {"chunk_bytes", shape.chunk_bytes},
           {"raw_warm_s", seconds_json(raw_warm)},
           {"warm_s", seconds_json(load_warm)},
           {"open_warm_s", seconds_json(open_warm)},
           {"read_warm_s", seconds_json(read_warm)},
           {"cold", cold},
           {"raw_cold_s", seconds_json(raw_cold)},
           {"raw_cold_direct_s", seconds_json(raw_cold_direct)},
           {"cold_s", seconds_json(load_cold)}};
}

json measure(const WorkerArgs& args, int rank, int world) {
  const std::vector<Spec> specs = model_specs(args.total);
  Shard shard = make_shard(specs, rank, world, true);
  const int R = args.repeat;
  const fs::path dir = args.work;
  json out;
  out["world"] = world;
  out["tensors"] = specs.size();
  out["flat_tensors"] = std::count_if(specs.begin(), specs.end(), [](const Spec& s) { return s.flat; });
  out["bytes"] = sum_over(MPI_COMM_WORLD, shard.bytes);
  out["shard_bytes"] = static_cast<uint64_t>(max_over(MPI_COMM_WORLD, static_cast<double>(shard.bytes)));
  const std::span<const std::byte> all(shard.memory.get(), shard.bytes);

  std::vector<dist::SaveItem> items;
  std::vector<std::span<const std::byte>> sources;
  for (size_t i = 0; i < specs.size(); ++i) {
    items.push_back({shard.tensors[i], shard.spans[i]});
    sources.emplace_back(shard.spans[i]);
  }
  const auto comm = dist::mpi_communicator(MPI_COMM_WORLD, std::chrono::minutes(10));
  {
    const unsigned threads = default_worker_threads();  // what the staging copy uses (threads = 0)
    Bytes dst = aligned_bytes(parallel_memcpy_bytes(sources), std::byte{1});
    const Staging staging =
        measure_staging(MPI_COMM_WORLD, R, make_async_save(*comm, dir / "async", items),
                        [&] { parallel_memcpy(sources, dst.get(), threads); });
    out["memcpy_s"] = staging.memcpy_s;
    out["memcpy_threads"] = threads;
    out["async_blocking_s"] = staging.blocking_s ? json(*staging.blocking_s) : json(nullptr);
  }

  // Durable saves, interleaved with the raw write of the same bytes by the same ranks: each rank
  // its shard as one file, buffered (plain and with early writeback) and O_DIRECT. A save after
  // each raw write, which one shifting every round, so that every save, like every raw write,
  // follows a single write (a save after a block of writes ran up to 20% slower on a virtual
  // disk). Removing files is outside every clock.
  const WriteShape shape = async_writer_shape();
  const std::vector<RawFile> raw = {{dir / fmt::format("raw-{}.bin", rank), {all}}};
  std::vector<double> buffered, writeback, direct, save_s, save_nosum_s, save_direct_s;
  bool direct_ok = true;
  fs::path kept;  // the last checkpoint saved with the defaults, for the load
  uint64_t files_written = 0;
  io::AsyncWriterOptions direct_writer;
  direct_writer.direct_io = true;
  auto raw_write_kind = [&](int kind) {
    if (kind == 2 && !direct_ok) return;
    const auto t = timed_maybe(MPI_COMM_WORLD, [&] { return raw_write(raw, shape, kind == 2, kind == 1); });
    if (!t) {
      direct_ok = false;  // every rank's filesystem refuses O_DIRECT alike (one folder)
    } else {
      (kind == 0 ? buffered : kind == 1 ? writeback : direct).push_back(*t);
    }
    fs::remove(raw[0].path);
  };
  // The defaults; without checksums; with O_DIRECT (SaveOptions::writer), checksums on.
  auto save_variant = [&](int k, int variant) {
    const bool defaults = variant == 0;
    const fs::path ckpt = dir / fmt::format("ckpt-{}-{}", k, variant);
    dist::SaveOptions o;
    o.checksums = variant != 1;
    if (variant == 2) o.writer = &direct_writer;
    dist::SaveResult result;
    const double s = timed(MPI_COMM_WORLD, [&] { result = dist::save(*comm, ckpt, items, o); });
    (variant == 0 ? save_s : variant == 1 ? save_nosum_s : save_direct_s).push_back(s);
    files_written = result.files.size();
    // One checkpoint stays (the last with the defaults); rank 0 removes the others, and the
    // next timed() waits for it.
    if (!defaults) {
      if (rank == 0) fs::remove_all(ckpt);
    } else {
      if (rank == 0 && !kept.empty()) fs::remove_all(kept);
      kept = ckpt;
    }
  };
  for (int k = 0; k < R; ++k) {
    for (int i = 0; i < 3; ++i) {
      raw_write_kind(i);
      save_variant(k, (i + k) % 3);
    }
  }
  out["files"] = sum_over(MPI_COMM_WORLD, files_written);  // by all ranks, per save
  out["writer_threads"] = shape.threads;
  out["writer_chunk_bytes"] = shape.chunk_bytes;
  out["raw_buffered_s"] = seconds_json(buffered);
  out["raw_writeback_s"] = seconds_json(writeback);
  out["raw_direct_s"] = seconds_json(direct);
  out["save_s"] = seconds_json(save_s);
  out["save_nosum_s"] = seconds_json(save_nosum_s);
  out["save_direct_s"] = seconds_json(save_direct_s);

  if (world == 4) {
    MPI_Comm pair;
    MPI_Comm_split(MPI_COMM_WORLD, rank < 2 ? 0 : MPI_UNDEFINED, rank, &pair);
    if (rank < 2) {
      out["load"] = measure_load(pair, rank, specs, kept, R);
      MPI_Comm_free(&pair);
    }
    idle_barrier();
  }
  return out;
}

}  // namespace

std::vector<Spec> model_specs(uint64_t total) {
  std::vector<Spec> specs;
  uint64_t used = 0;
  auto add = [&](Spec s) {
    used += s.bytes();
    specs.push_back(std::move(s));
  };
  for (int i = 0; i < 4; ++i) add(sized_spec(fmt::format("large.{}.weight", i), total / 8, i % 2 == 1));
  // Biases, norms: 16 KiB each, {4, 2048} as row blocks, {2, 4096} as flat partitions.
  const uint64_t small = std::min<uint64_t>(1000, total / 16 / (16 * kKiB));
  for (uint64_t i = 0; i < small; ++i) {
    const std::string name = fmt::format("layers.{:04d}.norm", i);
    add(i % 2 ? Spec{name, 2, 4096, true} : Spec{name, 4, 2048, false});
  }
  std::mt19937_64 rng(7);
  for (int i = 0; used + kMiB < total; ++i) {
    const uint64_t n = std::min<uint64_t>(total - used, (1 + rng() % 8) * kMiB);
    add(sized_spec(fmt::format("layers.{:04d}.weight", i), n, i % 2 == 1));
  }
  return specs;
}

int run_worker(int argc, char** argv, const WorkerArgs& args) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  g_mpi_thread_multiple = provided == MPI_THREAD_MULTIPLE;
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  try {
    const json out = measure(args, rank, world);
    if (rank == 0) io::write_file_atomic(io::Env::posix(), args.result, out.dump() + "\n");
  } catch (const std::exception& e) {
    // The other ranks may be waiting in a collective: take the whole run down.
    std::fprintf(stderr, "ckptio-bench-dist-io: rank %d of %d: %s\n", rank, world, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
}

}  // namespace ckptio::bench::dist_io
