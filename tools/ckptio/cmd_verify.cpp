// ckptio verify SOURCE: full validation; exit 0 only when every check passes.
#include <memory>
#include <string>

#include "command.h"
#include "source_dispatch.h"

namespace ckptio::cli {

void register_verify(Commands& commands) {
  Command& cmd = add_command(
      commands, "verify",
      "Validate a source completely (.pt/.pth/.bin: every pickle and tensor view, and the CRC-32 "
      "of every record)");
  struct Args {
    std::string path;
    bool full = false;
  };
  auto args = std::make_shared<Args>();
  cmd.positional("SOURCE", args->path,
                 "a file, a folder, CKPT/model|ema|optimizer, or hf://org/name[@rev][/path]");
  cmd.flag("--full", args->full, "training checkpoints: also check every file's checksum");
  cmd.action([args] { return run_on_source(args->path, Check::Verify, false, args->full); });
}

}  // namespace ckptio::cli
