#include "checkpoint/naming.h"

#include <charconv>

#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"

namespace ckptio {

std::string checkpoint_folder_name(int64_t epoch, int64_t global_step) {
  return "epoch" + std::to_string(epoch) + "-global_step" + std::to_string(global_step);
}

static std::optional<int64_t> parse_decimal(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

std::optional<std::pair<int64_t, int64_t>> parse_checkpoint_folder_name(std::string_view name) {
  constexpr std::string_view kEpoch = "epoch";
  constexpr std::string_view kStep = "-global_step";
  if (!name.starts_with(kEpoch)) return std::nullopt;
  const size_t dash = name.find(kStep);
  if (dash == std::string_view::npos) return std::nullopt;
  auto epoch = parse_decimal(name.substr(kEpoch.size(), dash - kEpoch.size()));
  auto step = parse_decimal(name.substr(dash + kStep.size()));
  if (!epoch || !step) return std::nullopt;
  return std::make_pair(*epoch, *step);
}

std::string_view save_phase_name(SavePhase phase) {
  switch (phase) {
    case SavePhase::Snapshot: return "snapshot";
    case SavePhase::WriteFiles: return "write_files";
    case SavePhase::WriteManifest: return "write_manifest";
    case SavePhase::Commit: return "commit";
    case SavePhase::Prune: return "prune";
    case SavePhase::Done: return "done";
  }
  return "unknown";
}

std::string_view checkpoint_state_name(CheckpointState state) {
  switch (state) {
    case CheckpointState::Committed: return "committed";
    case CheckpointState::Damaged: return "damaged";
    case CheckpointState::Incomplete: return "incomplete";
    case CheckpointState::Foreign: return "foreign";
  }
  return "unknown";
}

namespace checkpoint {

std::string temp_folder_name(std::string_view final_name) {
  return io::temp_path_for(std::string(final_name)).string();
}

std::optional<std::string> temp_folder_target(std::string_view name) {
  if (!name.starts_with('.')) return std::nullopt;
  const size_t tmp = name.rfind(".tmp-");
  if (tmp == std::string_view::npos || tmp < 1) return std::nullopt;
  std::string target(name.substr(1, tmp - 1));
  if (!parse_checkpoint_folder_name(target)) return std::nullopt;
  return target;
}

std::string replaced_folder_name(std::string_view final_name) {
  return io::replaced_path_for(std::string(final_name)).string();
}

std::optional<std::string> replaced_folder_target(std::string_view name) {
  auto target = io::replaced_target(name);
  if (!target || !parse_checkpoint_folder_name(*target)) return std::nullopt;
  return target;
}

std::string damaged_folder_name(std::string_view final_name, uint64_t n) {
  return std::string(final_name) + ".damaged-" + std::to_string(n);
}

}  // namespace checkpoint
}  // namespace ckptio
