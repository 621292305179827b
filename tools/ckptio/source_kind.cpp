#include "source_kind.h"

#include <cstdio>
#include <string>

#include "ckptio/io.h"
#include "ckptio/load.h"

namespace ckptio::cli {

SourceKind detect_source_kind(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) return SourceKind::Missing;
  if (std::filesystem::is_directory(status)) return SourceKind::Directory;
  switch (detect_file_format(*io::Env::posix().open_read(path))) {
    case FileFormat::TorchZip: return SourceKind::TorchZip;
    case FileFormat::TorchLegacy: return SourceKind::TorchLegacy;
    case FileFormat::TorchTar: return SourceKind::TorchTar;
    case FileFormat::Safetensors:
    case FileFormat::Unknown:  // the safetensors reader says what is wrong with it
      break;
  }
  return SourceKind::Safetensors;
}

std::string_view source_kind_name(SourceKind kind) {
  switch (kind) {
    case SourceKind::Safetensors: return "safetensors";
    case SourceKind::TorchZip: return "torch-zip";
    case SourceKind::TorchLegacy: return "torch-legacy";
    case SourceKind::TorchTar: return "torch-tar";
    case SourceKind::Directory: return "directory";
    case SourceKind::Missing: return "missing";
  }
  return "unknown";
}


}  // namespace ckptio::cli
