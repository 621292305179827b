// ckptio verify SOURCE: full validation; exit 0 only when every check passes.
#include <memory>
#include <string>

#include "command.h"
#include "source_dispatch.h"

namespace ckptio::cli {

void register_verify(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "verify", "Validate a source completely (.pt/.pth/.bin: every pickle and tensor view, and "
                "the CRC-32 of every record)");
  auto path = std::make_shared<std::string>();
  auto full = std::make_shared<bool>(false);
  cmd->add_option("SOURCE", *path,
                  "a file, a folder, CKPT/model|ema|optimizer, or hf://org/name[@rev][/path]")
      ->required();
  cmd->add_flag("--full", *full, "training checkpoints: also check every file's checksum");
  cmd->callback([&action, path, full] {
    action = [path, full] { return run_on_source(*path, Check::Verify, false, *full); };
  });
}

}  // namespace ckptio::cli
