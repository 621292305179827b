// ckptio inspect SOURCE [--json]: what is in a file or folder, without reading tensor data.
#include <memory>
#include <string>

#include "command.h"
#include "source_dispatch.h"

namespace ckptio::cli {

void register_inspect(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("inspect", "List the tensors, metadata and totals of a source");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("SOURCE", *path,
                  "a file, a folder, CKPT/model|ema|optimizer, or hf://org/name[@rev][/path]")
      ->required();
  cmd->add_flag("--json", *json, "machine-readable output");
  cmd->callback([&action, path, json] {
    action = [path, json] { return run_on_source(*path, Check::Inspect, *json, false); };
  });
}

}  // namespace ckptio::cli
