// ckptio-bench-dist-plan: the coordinator's work for a large job, without any file: every rank's
// pieces for 1,000 tensors on 1,024 simulated ranks (400 row-sharded, 400 ZeRO flat partitions
// that straddle rows, 100 column-sharded, 100 replicated), merged into the global index and
// validated (bounds, overlaps by sorting, coverage), then the index rendered as JSON and parsed
// back with full validation. Prints the time of each step. PyTorch's pairwise validation took
// 200+ s for a plan of this size (pytorch/pytorch#163548).
#include <fmt/core.h>

#include <chrono>
#include <ctime>
#include <cstdlib>
#include <string>
#include <vector>

#include "ckptio/dist.h"
#include "dist/plan.h"

using namespace ckptio;
using namespace ckptio::dist;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::vector<ShardedTensor> rank_tensors(int rank, int world, int tensors) {
  std::vector<ShardedTensor> out;
  for (int i = 0; i < tensors; ++i) {
    const std::string name = "layers." + std::to_string(i) + ".weight";
    switch (i % 10) {
      case 0: case 1: case 2: case 3: {  // rows: 4096 rows over the ranks
        const int64_t rows = 4096 / world;
        out.push_back(ShardedTensor::block(name, DType::BF16, {4096, 1024}, {rank * rows, 0}, {rows, 1024}));
        break;
      }
      case 4: case 5: case 6: case 7:  // ZeRO: 1000 x 3001 elements, padded, straddling rows
        out.push_back(ShardedTensor::zero_partition(name, DType::F32, {1000, 3001}, rank, world));
        break;
      case 8: {  // columns
        const int64_t cols = 2048 / world;
        out.push_back(ShardedTensor::block(name, DType::BF16, {512, 2048}, {0, rank * cols}, {512, cols}));
        break;
      }
      default: out.push_back(ShardedTensor::replicated(name, DType::F32, {1024}));
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const int world = argc > 1 ? std::atoi(argv[1]) : 1024;
  const int tensors = argc > 2 ? std::atoi(argv[2]) : 1000;

  auto t0 = Clock::now();
  std::vector<detail::RankReport> reports(static_cast<size_t>(world));
  std::vector<std::pair<std::string, uint64_t>> replicated;
  for (const ShardedTensor& t : rank_tensors(0, world, tensors)) {
    if (t.placement == Placement::Replicated) replicated.emplace_back(t.name, t.local_nbytes());
  }
  const std::vector<int> owners = detail::assign_replicated(replicated, world);
  std::vector<int> owner_of(static_cast<size_t>(tensors), -1);
  for (size_t i = 0; i < replicated.size(); ++i) {
    owner_of[static_cast<size_t>(std::atoi(replicated[i].first.c_str() + 7))] = owners[i];
  }
  for (int rank = 0; rank < world; ++rank) {
    detail::RankReport& r = reports[static_cast<size_t>(rank)];
    r.files.push_back({detail::rank_file_name(rank, 1, 2), 0, {}});
    r.files.push_back({detail::rank_file_name(rank, 2, 2), 0, {}});
    std::vector<uint64_t> at(2, 4096);  // past a header
    const auto mine = rank_tensors(rank, world, tensors);
    for (size_t i = 0; i < mine.size(); ++i) {
      const ShardedTensor& t = mine[i];
      r.tensors.push_back({t.name, t.dtype, t.global_shape});
      if (t.placement == Placement::Replicated && owner_of[i] != rank) continue;
      uint32_t k = 0;
      for (detail::Region& region : detail::regions_of(t)) {
        r.chunks.push_back({static_cast<uint32_t>(i), k, region.box, at[k], at[k] + region.nbytes});
        at[k] += region.nbytes;
        k = (k + 1) % 2;
      }
    }
    r.files[0].size = at[0];
    r.files[1].size = at[1];
  }
  const double plan_s = seconds_since(t0);

  t0 = Clock::now();
  const std::clock_t cpu0 = std::clock();
  const GlobalIndex index = detail::merge_reports(std::move(reports));
  const double merge_s = seconds_since(t0);
  // CPU time too: on a loaded machine the wall clock includes waiting for a core.
  const double merge_cpu_s = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
  t0 = Clock::now();
  validate_index(index, "bench");
  const double validate_s = seconds_since(t0);
  size_t chunks = 0;
  for (const auto& t : index.tensors) chunks += t.chunks.size();

  t0 = Clock::now();
  const std::string text = index_to_json(index);
  const double render_s = seconds_since(t0);
  t0 = Clock::now();
  const GlobalIndex parsed = parse_index(text, "bench");
  const double parse_s = seconds_since(t0);

  fmt::print("ranks {}, tensors {}, chunks {}, files {}, index {:.1f} MB\n", world, tensors,
             chunks, index.files.size(), static_cast<double>(text.size()) / 1e6);
  fmt::print("plan every rank's pieces:            {:.3f} s\n", plan_s);
  fmt::print("merge + validate the global index:   {:.3f} s ({:.3f} s CPU)\n", merge_s, merge_cpu_s);
  fmt::print("  of which validation:               {:.3f} s\n", validate_s);
  fmt::print("render the index as JSON:            {:.3f} s\n", render_s);
  fmt::print("parse + validate the index from JSON: {:.3f} s\n", parse_s);
  return parsed.tensors.size() == index.tensors.size() ? 0 : 1;
}
