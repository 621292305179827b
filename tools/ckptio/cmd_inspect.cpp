// ckptio inspect SOURCE [--json]: what is in a file or folder, without reading tensor data.
#include <filesystem>
#include <memory>
#include <string>

#include "checkpoint_cli.h"
#include "ckptio/error.h"
#include "command.h"
#include "inspect_safetensors.h"
#include "inspect_sharded.h"
#include "inspect_torch.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace {

int inspect(const std::filesystem::path& path, bool json) {
  switch (detect_source_kind(path)) {
    case SourceKind::Missing:
      throw Error(ErrorCode::NotFound, "'" + path.string() + "' does not exist");
    case SourceKind::Safetensors:
      return inspect_safetensors(path, json);
    case SourceKind::TorchZip:
    case SourceKind::TorchLegacy:
    case SourceKind::TorchTar:  // the torch reader refuses it with a precise message
      return inspect_torch(path, json);
    case SourceKind::Directory:
      if (is_training_checkpoint(path)) return inspect_training_checkpoint(path, json);
      if (is_sharded_folder(path)) return inspect_sharded(path, json);
      break;
    default:
      break;
  }
  throw Error(ErrorCode::Unsupported, "'" + path.string() + "': cannot inspect a " +
                                          std::string(source_kind_name(detect_source_kind(path))));
}

}  // namespace

void register_inspect(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("inspect", "List the tensors, metadata and totals of a source");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("SOURCE", *path, "file or folder")->required();
  cmd->add_flag("--json", *json, "machine-readable output");
  cmd->callback([&action, path, json] { action = [path, json] { return inspect(*path, *json); }; });
}

}  // namespace ckptio::cli
