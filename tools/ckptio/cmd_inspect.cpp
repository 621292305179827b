// ckptio inspect SOURCE [--json]: what is in a file or folder, without reading tensor data.
#include <memory>
#include <string>

#include "command.h"
#include "source_dispatch.h"

namespace ckptio::cli {

void register_inspect(Commands& commands) {
  Command& cmd = add_command(commands, "inspect", "List the tensors, metadata and totals of a source");
  struct Args {
    std::string path;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  cmd.positional("SOURCE", args->path,
                 "a file, a folder, CKPT/model|ema|optimizer, or hf://org/name[@rev][/path]");
  cmd.flag("--json", args->json, "machine-readable output");
  cmd.action([args] { return run_on_source(args->path, Check::Inspect, args->json, false); });
}

}  // namespace ckptio::cli
