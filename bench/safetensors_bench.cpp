// ckptio-bench-safetensors: save and load of a safetensors file of mixed-size tensors, beside the
// best raw I/O of the same bytes measured in the same run, and the time to open a 10,000-tensor
// file.
//
// Like for like: the save and the raw write are both durable (new file, data fsynced, folder
// fsynced) and the raw write is the fastest of buffered and O_DIRECT pwrite by one thread and by
// the async writer's threads, in its chunk size; the loads and the raw read read the same
// just-written file (warm page cache) into fresh memory, the raw read into the huge-page memory
// ckptio loads into, the fastest of the parallel reader's threads (chunks in order, or a share
// each) and one thread. Each figure is the median of --repeat runs.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "ckptio/error.h"
#include "ckptio/safetensors.h"
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
  fill_pseudo_random(w.data.get(), total, 1);
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

uint64_t g_checksum = 0;  // keeps the loads observable

double load_owned(const fs::path& path, ReadMode mode) {
  const auto start = Clock::now();
  const SafetensorsReader reader = SafetensorsReader::open(path, {.mode = mode});
  std::vector<Tensor> owned;
  owned.reserve(reader.tensors().size());
  for (const TensorInfo& info : reader.tensors()) owned.push_back(reader.read_owned(info.name));
  const double t = seconds_since(start);
  for (const Tensor& tensor : owned) {
    if (tensor.nbytes()) g_checksum += static_cast<uint64_t>(tensor.bytes()[0]);
  }
  return t;
}

// The whole file into owned memory the way a loader does it: read_all_owned (one allocation,
// parallel reads straight into it, by the path io::ReadPath::Auto picks).
double load_all_owned(const fs::path& path) {
  const auto start = Clock::now();
  const SafetensorsReader reader = SafetensorsReader::open(path, {.mode = ReadMode::Pread});
  const std::vector<Tensor> owned = reader.read_all_owned();
  const double t = seconds_since(start);
  for (const Tensor& tensor : owned) {
    if (tensor.nbytes()) g_checksum += static_cast<uint64_t>(tensor.bytes()[0]);
  }
  return t;
}

// Zero-copy: open with mmap and touch one byte per page of every tensor (what a consumer pays).
double load_mapped_touch(const fs::path& path) {
  const auto start = Clock::now();
  const SafetensorsReader reader = SafetensorsReader::open(path);
  uint64_t sum = 0;
  for (const TensorInfo& info : reader.tensors()) {
    const Tensor t = reader.tensor(info.name);
    const auto bytes = t.bytes();
    for (size_t i = 0; i < bytes.size(); i += 4096) sum += static_cast<uint64_t>(bytes[i]);
  }
  const double t = seconds_since(start);
  g_checksum += sum;
  return t;
}

void bench_throughput(const Options& o, const WorkDir& work, Report& report) {
  Workload w = make_workload(o.quick ? 128 * kMiB : kGiB);
  const SafetensorsLayout layout = plan_safetensors(w.tensors);
  const uint64_t file_bytes = layout.file_size;
  const fs::path st_path = work / "bench.safetensors";
  report.context(fmt::format(
      "Workload: {:.2f} GiB in {} tensors (256 B .. 16 MiB; F32/BF16/F16/I64), header {} B. "
      "Median of {} runs.",
      static_cast<double>(file_bytes) / kGiB, w.tensors.size(), layout.header.size(), o.repeat));
  RawFile raw{work / "raw.bin", {std::as_bytes(std::span(layout.header.data(), layout.header.size()))}};
  for (size_t k : layout.order) raw.pieces.push_back(w.tensors[k].view.bytes);

  // Save vs raw write, interleaved so that neither side gets a systematically quieter disk.
  WriteLimit write_limit;
  std::vector<double> saves;
  for (int i = 0; i < o.repeat; ++i) {
    write_limit.measure({raw}, {[&] {
                          fs::remove(st_path);
                          const auto start = Clock::now();
                          save_safetensors(st_path, w.tensors);
                          saves.push_back(seconds_since(start));
                        }});
  }
  if (fs::file_size(st_path) != file_bytes) throw Error(ErrorCode::Internal, "size mismatch");

  // Loads: the file was just written, so every variant reads a warm page cache.
  const ReadShape shape{parallel_reader_threads(), parallel_reader_chunk_bytes()};
  raw_read_fresh({st_path}, shape);  // every page cached
  ReadLimit read_limit(shape);
  std::vector<double> all_s, pread_s, mmap_owned_s, touch_s;
  for (int i = 0; i < o.repeat; ++i) {
    read_limit.measure_fresh({st_path});
    all_s.push_back(load_all_owned(st_path));
    pread_s.push_back(load_owned(st_path, ReadMode::Pread));
    mmap_owned_s.push_back(load_owned(st_path, ReadMode::Mmap));
    touch_s.push_back(load_mapped_touch(st_path));
  }
  fs::remove(st_path);

  const std::string kWrite = "raw write+fsync", kRead = "raw read (warm cache)";
  report.add({Group::Limit, kWrite, write_limit.seconds(), file_bytes, "", "",
              write_limit.description()});
  report.add({Group::Limit, kRead, read_limit.seconds(), file_bytes, "", "",
              "into fresh huge-page memory, " + read_limit.description()});
  report.add({Group::Ckptio, "save_safetensors", median(saves), file_bytes, kWrite, "",
              "durable: data and folder fsynced, new file"});
  report.add({Group::Ckptio, "read_all_owned (parallel)", median(all_s), file_bytes, kRead, "",
              "one allocation, parallel reads (io::ReadPath::Auto)"});
  report.add({Group::Ckptio, "read_owned per tensor, Pread", median(pread_s), file_bytes, kRead, "", ""});
  report.add({Group::Ckptio, "read_owned per tensor, Mmap + copy", median(mmap_owned_s), file_bytes,
              kRead, "", ""});
  report.add({Group::Reference, "mmap views, 1 byte per page touched", median(touch_s), 0,
              "", "", "zero-copy: not a read of every byte, so no limit applies"});
  report.goal(Goal::ratio("save_safetensors / raw write+fsync", "save_safetensors", kWrite, 0.9));
  report.goal(Goal::ratio("read_all_owned / raw read", "read_all_owned (parallel)", kRead, 0.9));
}

void bench_open(const WorkDir& work, Report& report) {
  constexpr int kTensors = 10'000;
  std::vector<float> values(kTensors * 4);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  std::vector<NamedTensor> tensors;
  for (int i = 0; i < kTensors; ++i) {
    tensors.push_back({fmt::format("model.layers.{}.block.{}.weight", i / 10, i % 10),
                       TensorView{DType::F32, {2, 2},
                                  std::as_bytes(std::span(values).subspan(i * 4, 4))}});
  }
  const fs::path path = work / "10k.safetensors";
  SafetensorsWriteOptions options;
  options.sync = false;  // not timed
  save_safetensors(path, tensors, options);
  const uint64_t header_bytes = SafetensorsReader::open(path).header().header_bytes;
  auto time_opens = [&](ReadMode mode) {
    return time_median(30, [&] {
      const SafetensorsReader reader = SafetensorsReader::open(path, {.mode = mode});
      if (reader.tensors().size() != kTensors) throw Error(ErrorCode::Internal, "tensor count");
    });
  };
  const std::string note =
      fmt::format("{} tensors, header {} B; validation only, median of 30 opens", kTensors, header_bytes);
  report.add({Group::Ckptio, "open 10k-tensor file, Mmap", time_opens(ReadMode::Mmap), 0, "", "", note});
  report.add({Group::Ckptio, "open 10k-tensor file, Pread", time_opens(ReadMode::Pread), 0, "", "", note});
  report.goal(Goal::at_most("open of a 10,000-tensor file (Mmap)", "open 10k-tensor file, Mmap", 20, 1e3, "ms"));
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(
      argc, argv,
      {"ckptio-bench-safetensors", "safetensors save/load against the raw limits, and open time",
       "128 MiB instead of 1 GiB", 3});
  try {
    WorkDir work(o.dir, "ckptio-bench-safetensors-");
    Report report("ckptio-bench-safetensors", "save, load and open of safetensors files");
    bench_throughput(o, work, report);
    bench_open(work, report);
    report.set("quick", o.quick);
    report.set("checksum", g_checksum & 0xFF);
    report.emit(o);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-safetensors: error: %s\n", e.what());
    return 1;
  }
}
