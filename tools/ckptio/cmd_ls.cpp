// ckptio ls EXP [--json]: the checkpoints of an experiment folder, with their state.
#include <fmt/format.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "command.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace {

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, units[u]);
}

int list_experiment(const std::filesystem::path& exp, bool json) {
  if (!std::filesystem::is_directory(exp)) {
    throw Error(ErrorCode::NotFound, "'" + exp.string() + "' is not a folder");
  }
  const auto entries = list_checkpoints(exp);
  const auto latest = latest_checkpoint(exp, {.warn = [](const std::string&) {}});
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : entries) {
      out.push_back({{"name", e.name},
                     {"path", e.path.string()},
                     {"epoch", e.epoch},
                     {"global_step", e.global_step},
                     {"size_bytes", e.size_bytes},
                     {"state", checkpoint_state_name(e.state)},
                     {"temp", e.is_temp},
                     {"latest", latest && latest->path == e.path},
                     {"problem", e.problem}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (entries.empty()) {
    std::cout << "no checkpoints in " << printable(exp.string()) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<40} {:>6} {:>12} {:>11}  {}\n", "NAME", "EPOCH", "GLOBAL_STEP",
                           "SIZE", "STATE");
  for (const auto& e : entries) {
    std::string state(checkpoint_state_name(e.state));
    if (latest && latest->path == e.path) state += " (latest)";
    if (e.state != CheckpointState::Committed) state += ": " + e.problem;
    std::cout << fmt::format("{:<40} {:>6} {:>12} {:>11}  {}\n", printable(e.name), e.epoch,
                             e.global_step, human_bytes(e.size_bytes), printable(state));
  }
  return 0;
}

}  // namespace

void register_ls(Commands& commands) {
  Command& cmd = add_command(commands, "ls", "List the checkpoints of an experiment folder");
  struct Args {
    std::string path;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  cmd.positional("EXP", args->path, "experiment folder");
  cmd.flag("--json", args->json, "machine-readable output");
  cmd.action([args] { return list_experiment(args->path, args->json); });
}

}  // namespace ckptio::cli
