// ckptio-bench-dist-io: dist::save and dist::load under MPI against raw I/O of the same bytes by the
// same ranks, measured in the same run.
//
// The program is its own driver: run plainly, it starts `mpirun -np W` of itself for each W of
// --np (1, 2, 4) and turns what each run's rank 0 reports into one report. Every rank holds its
// shard of a model-like BF16 state (1 GiB in all; --quick 256 MiB): four tensors of 1/8 each, up
// to a thousand of 16 KiB, the rest of 1-8 MiB; half as row blocks, half as ZeRO flat partitions
// whose boundaries fall inside rows (dist_io_worker.h). With W ranks:
//   - durable dist::save (fsync, checksums: the defaults; without checksums; with O_DIRECT through
//     SaveOptions::writer) against the raw write limit: each rank writes its shard as one new file
//     by parallel pwrite at the async writer's threads and chunk size, buffered and O_DIRECT (the
//     faster counts), fdatasync, folder fsync. Both interleaved, barrier before each, the slowest rank's time; aggregate GB/s;
//   - the stall of an asynchronous save (dist::CheckpointIO, copy: save() until it returns)
//     against a memcpy of each rank's shard (the same tensors, threads and 8 MiB pieces as the
//     staging copy) into pre-faulted memory; both every rank at once, interleaved;
//   - with 4 ranks, the checkpoint they saved loaded by 2 of them (each its half as row blocks and
//     ZeRO partitions of 2, into pre-faulted buffers), checked against what was saved, warm and,
//     where the page cache can be dropped (root), cold; against pread of the files ranks 2r and
//     2r+1 wrote, by as many threads as the load, into pre-faulted memory (cold: the faster of
//     buffered and O_DIRECT).
// Each figure is the median of --repeat runs.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "common/options.h"
#include "common/peer_process.h"
#include "common/report.h"
#include "common/work_dir.h"
#include "dist_io_worker.h"

namespace {

using namespace ckptio::bench;
using nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMiB = uint64_t{1} << 20;
const char* const kProgram = "ckptio-bench-dist-io";

std::optional<double> seconds(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? std::optional<double>(j[key].get<double>()) : std::nullopt;
}

std::optional<double> faster(std::optional<double> a, std::optional<double> b) {
  if (a && b) return std::min(*a, *b);
  return a ? a : b;
}

// "O_DIRECT (buffered: 1.234 s)" for whichever of the two the limit took.
std::string which(std::optional<double> buffered, std::optional<double> direct) {
  if (!direct) return "buffered (O_DIRECT refused here)";
  if (!buffered) return "O_DIRECT";
  return *direct < *buffered ? fmt::format("O_DIRECT (buffered: {:.3f} s)", *buffered)
                             : fmt::format("buffered (O_DIRECT: {:.3f} s)", *direct);
}

// Open MPI refuses root and, in containers, the single-copy transport; ranks that wait must yield
// the cores. Only where the caller has not chosen.
void mpi_environment() {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  ::setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
  ::setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
  ::setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
}

void add_save_rows(Report& report, const json& j) {
  const int w = j["world"].get<int>();
  const uint64_t bytes = j["bytes"].get<uint64_t>();
  const uint64_t shard = j["shard_bytes"].get<uint64_t>();
  const std::string p = fmt::format("{} rank{}: ", w, w == 1 ? "" : "s");
  const std::string write = p + "raw write+fsync", copy = p + "memcpy of a rank's shard";
  const std::string save = p + "dist::save, fsync + checksums", stall = p + "async save, blocking";
  // The buffered limit is the better of plain writes and writes with early writeback.
  const auto buffered = faster(seconds(j, "raw_buffered_s"), seconds(j, "raw_writeback_s"));
  const auto direct = seconds(j, "raw_direct_s");
  report.add({Group::Limit, write, faster(buffered, direct), bytes, "", "",
              fmt::format("each rank its shard as one file: parallel pwrite, {} threads x {} MiB, {}; "
                          "fdatasync, folder fsync",
                          j["writer_threads"].get<unsigned>(), j["writer_chunk_bytes"].get<uint64_t>() / kMiB,
                          which(buffered, direct))});
  report.add({Group::Ckptio, save, seconds(j, "save_s"), bytes, write, "",
              fmt::format("the defaults; files per rank: {}; index + manifest by rank 0, folder commit",
                          j["files"].get<uint64_t>() / static_cast<uint64_t>(w))});
  report.add({Group::Ckptio, p + "dist::save, fsync, no checksums", seconds(j, "save_nosum_s"), bytes,
              write, "", ""});
  report.add({Group::Ckptio, p + "dist::save, O_DIRECT, fsync + checksums", seconds(j, "save_direct_s"),
              bytes, write, "", "SaveOptions::writer with direct_io"});
  report.add({Group::Limit, copy, seconds(j, "memcpy_s"), shard, "", "",
              fmt::format("its tensors into pre-faulted memory, {} threads x 8 MiB, every rank at once, "
                          "interleaved with the stall",
                          j["memcpy_threads"].get<unsigned>())});
  const auto blocking = seconds(j, "async_blocking_s");
  report.add({Group::Ckptio, stall, blocking, shard, copy, "",
              blocking ? "save() returns, the bytes staged"
                       : "not measured: MPI did not grant MPI_THREAD_MULTIPLE"});
  report.goal(Goal::ratio(p + "durable dist::save (defaults) >= 0.9x raw write+fsync", save, write, 0.9));
  report.goal(Goal::ratio(p + "durable dist::save, O_DIRECT >= 0.9x raw write+fsync",
                          p + "dist::save, O_DIRECT, fsync + checksums", write, 0.9));
  report.goal(Goal::ratio(p + "async save stall <= 1.2x the memcpy of a rank's shard (speed >= 0.83x)",
                          stall, copy, 1 / 1.2));
}

void add_load_rows(Report& report, const json& l) {
  const std::string p = "4 -> 2 ranks: ";
  const uint64_t bytes = l["bytes"].get<uint64_t>(), raw_bytes = l["raw_bytes"].get<uint64_t>();
  const std::string raw_note =
      fmt::format("rank r preads the {} files ranks 2r and 2r+1 wrote (headers included), {} threads x "
                  "{} MiB, into pre-faulted memory",
                  l["raw_files"].get<uint64_t>() / 2, l["threads"].get<unsigned>(),
                  l["chunk_bytes"].get<uint64_t>() / kMiB);
  const std::string load_note = fmt::format(
      "each rank its half (row blocks, ZeRO partitions of 2) into pre-faulted buffers, {} preads in all; "
      "checked against what was saved",
      l["reads"].get<uint64_t>());
  report.add({Group::Limit, p + "raw read, warm", seconds(l, "raw_warm_s"), raw_bytes, "", "", raw_note});
  report.add({Group::Ckptio, p + "dist::load, warm", seconds(l, "warm_s"), bytes, p + "raw read, warm", "",
              load_note});
  report.add({Group::Reference, p + "Reader::open, warm", seconds(l, "open_warm_s"), 0, "", "",
              "the index read, parsed and validated: the part of the load before any tensor byte"});
  report.add({Group::Reference, p + "Reader::read, warm", seconds(l, "read_warm_s"), bytes,
              p + "raw read, warm", "", "the load's reads alone, through a Reader already open"});
  const bool cold = l["cold"].get<bool>();
  const auto buffered = seconds(l, "raw_cold_s"), direct = seconds(l, "raw_cold_direct_s");
  const std::string not_cold = "not measured: dropping the page cache needs root";
  report.add({Group::Limit, p + "raw read, cold", faster(buffered, direct), raw_bytes, "", "",
              cold ? "page cache dropped before each run; " + which(buffered, direct) : not_cold});
  report.add({Group::Ckptio, p + "dist::load, cold", seconds(l, "cold_s"), bytes, p + "raw read, cold", "",
              cold ? "page cache dropped before each run" : not_cold});
  report.goal(Goal::ratio(p + "warm dist::load >= 0.9x raw read", p + "dist::load, warm", p + "raw read, warm", 0.9));
  report.goal(Goal::ratio(p + "cold dist::load >= 0.9x raw read", p + "dist::load, cold", p + "raw read, cold", 0.9));
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> nps{1, 2, 4};
  std::string mpirun = CKPTIO_MPIEXEC;
  uint64_t total_mib = 0;
  std::string worker_result, worker_dir;
  const Options opt = parse_options(
      argc, argv,
      {kProgram, "dist::save and dist::load under MPI against raw I/O by the same ranks",
       "256 MiB instead of 1 GiB", 3},
      [&](CLI::App& app) {
        // Up to 4: the smallest row-blocked tensors have 4 rows.
        app.add_option("--np", nps, "rank counts from 1 to 4, one mpirun each; 4 adds the load 4 -> 2")
            ->delimiter(',')
            ->check(CLI::Range(1, 4));
        app.add_option("--mpirun", mpirun, "the MPI launcher")->capture_default_str();
        app.add_option("--total-mib", total_mib, "the whole state's size in MiB (default 1024, --quick 256)");
        // Set by the driver for the runs it starts under mpirun.
        app.add_option("--worker-result", worker_result)->group("");
        app.add_option("--worker-dir", worker_dir)->group("");
      });
  const uint64_t total = (total_mib != 0 ? total_mib : opt.quick ? 256 : 1024) * kMiB;
  if (!worker_result.empty()) {
    return dist_io::run_worker(argc, argv, {worker_dir, worker_result, total, opt.repeat});
  }
  try {
    WorkDir work(opt.dir, std::string(kProgram) + "-");
    mpi_environment();
    const fs::path self = fs::read_symlink("/proc/self/exe");
    Report report(kProgram, "dist::save and dist::load under MPI against raw I/O by the same ranks");
    bool failed = false;
    json runs = json::array();
    for (const int w : nps) {
      const fs::path dir = work / fmt::format("np{}", w), result = work / fmt::format("np{}.json", w);
      fs::create_directories(dir);
      // Ranks unbound (Open MPI binds each to one core for up to 2 ranks): each uses its I/O threads
      // on every core, as the raw limit does. The runs' output goes to stderr; stdout is the report.
      const std::string command =
          fmt::format("{} -np {} --oversubscribe --bind-to none {} --worker-result {} --worker-dir {} "
                      "--total-mib {} --repeat {} 1>&2",
                      shell_quote(mpirun), w, shell_quote(self.string()), shell_quote(result.string()),
                      shell_quote(dir.string()), total / kMiB, opt.repeat);
      std::fprintf(stderr, "%s: %d rank%s\n", kProgram, w, w == 1 ? "" : "s");
      const int status = std::system(command.c_str());
      if (status != 0 || !fs::exists(result)) {
        report.note(fmt::format("{} ranks: the run failed (status {}): {}", w, status, command));
        failed = true;
        continue;
      }
      const json j = read_json(result);
      fs::remove_all(dir);
      runs.push_back(j);
      add_save_rows(report, j);
    }
    bool loaded = false;
    for (const json& j : runs) {
      if (j.contains("load")) {
        add_load_rows(report, j["load"]);
        loaded = true;
      }
    }
    if (!loaded) report.note("The load 4 -> 2 runs only when --np includes 4.");
    if (!runs.empty()) {
      const json& j = runs.front();
      report.context(fmt::format(
          "State: {:.1f} MiB of BF16 in {} tensors ({} as ZeRO flat partitions cut inside rows, the "
          "rest as row blocks): four of 1/8 each, up to 1,000 of 16 KiB, the rest of 1-8 MiB. Each rank "
          "holds 1/W of every tensor.",
          static_cast<double>(j["bytes"].get<uint64_t>()) / kMiB, j["tensors"].get<uint64_t>(),
          j["flat_tensors"].get<uint64_t>()));
    }
    report.context(fmt::format(
        "Ranks are processes on this machine ({} cores), started by `{} -np W --bind-to none`. Every "
        "figure: barrier, then the slowest rank's time; median of {} runs. GB/s are aggregate (all "
        "ranks' bytes), except the memcpy and stall rows (one rank's shard).",
        std::thread::hardware_concurrency(), mpirun, opt.repeat));
    report.set("quick", opt.quick);
    report.set("runs", runs);
    report.emit(opt);
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return 1;
  }
}
