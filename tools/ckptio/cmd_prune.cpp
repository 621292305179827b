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

void register_prune(Commands& commands) {
  Command& cmd = add_command(commands, "prune", "Remove all but the newest N committed checkpoints");
  struct Args {
    std::string path;
    // Signed so that "-1" is refused as a usage error instead of wrapping to 2^64-1.
    int64_t keep = 1;
  };
  auto args = std::make_shared<Args>();
  cmd.positional("EXP", args->path, "experiment folder");
  cmd.at_least("--keep", args->keep, 1, "how many committed checkpoints to keep (at least 1)", true);
  cmd.action([args] { return prune(args->path, static_cast<size_t>(args->keep)); });
}

}  // namespace ckptio::cli
