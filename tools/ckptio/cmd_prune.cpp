// ckptio prune EXP --keep N: remove all but the newest N committed checkpoints.
#include <cstdint>
#include <iostream>
#include <limits>
#include <memory>
#include <string>

#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "command.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace {

int prune(const std::filesystem::path& exp, size_t keep) {
  if (!std::filesystem::is_directory(exp)) {
    throw Error(ErrorCode::NotFound, "'" + exp.string() + "' is not a folder");
  }
  if (keep == 0) {
    throw Error(ErrorCode::InvalidArgument, "--keep must be at least 1 (the newest committed "
                                            "checkpoint is never removed)");
  }
  const auto removed = prune_checkpoints(exp, keep);
  for (const auto& p : removed) std::cout << "removed " << printable(p.string()) << "\n";
  std::cout << removed.size() << " checkpoint(s) removed, newest " << keep << " kept\n";
  return 0;
}

}  // namespace

void register_prune(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("prune", "Remove all but the newest N committed checkpoints");
  auto path = std::make_shared<std::string>();
  // Signed so that "-1" is refused as a usage error instead of wrapping to 2^64-1.
  auto keep = std::make_shared<int64_t>(1);
  cmd->add_option("EXP", *path, "experiment folder")->required();
  cmd->add_option("--keep", *keep, "how many committed checkpoints to keep (at least 1)")
      ->required()
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  cmd->callback(
      [&action, path, keep] { action = [path, keep] { return prune(*path, static_cast<size_t>(*keep)); }; });
}

}  // namespace ckptio::cli
