// ckptio verify SOURCE: full validation; exit 0 only when every check passes.
#include <filesystem>
#include <memory>
#include <string>

#include "ckptio/error.h"
#include "command.h"
#include "inspect_safetensors.h"
#include "inspect_sharded.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace {

int verify(const std::filesystem::path& path) {
  switch (detect_source_kind(path)) {
    case SourceKind::Missing:
      throw Error(ErrorCode::NotFound, "'" + path.string() + "' does not exist");
    case SourceKind::Safetensors:
      return verify_safetensors(path);
    case SourceKind::Directory:
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
  cmd->add_option("SOURCE", *path, "file or folder")->required();
  cmd->callback([&action, path] { action = [path] { return verify(*path); }; });
}

}  // namespace ckptio::cli
