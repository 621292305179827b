// ckptio verify SOURCE: full validation; exit 0 only when every check passes.
#include <filesystem>
#include <memory>
#include <string>

#include "checkpoint_cli.h"
#include "ckptio/error.h"
#include "command.h"
#include "inspect_safetensors.h"
#include "inspect_sharded.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace {

int verify(const std::filesystem::path& path, bool full) {
  switch (detect_source_kind(path)) {
    case SourceKind::Missing:
      throw Error(ErrorCode::NotFound, "'" + path.string() + "' does not exist");
    case SourceKind::Safetensors:
      return verify_safetensors(path);
    case SourceKind::Directory:
      if (is_training_checkpoint(path)) return verify_training_checkpoint(path, full);
      if (is_sharded_folder(path)) return verify_sharded_folder(path);
      break;
    default:
      break;
  }
  throw Error(ErrorCode::Unsupported, "'" + path.string() + "': cannot verify a " +
                                          std::string(source_kind_name(detect_source_kind(path))));
}

}  // namespace

void register_verify(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("verify", "Validate a file or folder completely");
  auto path = std::make_shared<std::string>();
  auto full = std::make_shared<bool>(false);
  cmd->add_option("SOURCE", *path, "file or folder")->required();
  cmd->add_flag("--full", *full, "training checkpoints: also check every file's checksum");
  cmd->callback(
      [&action, path, full] { action = [path, full] { return verify(*path, *full); }; });
}

}  // namespace ckptio::cli
