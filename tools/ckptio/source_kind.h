// What a path on the command line is, decided by content (magic bytes, folder contents), never by
// extension alone.
#pragma once

#include <filesystem>
#include <string_view>

#include "ckptio/error.h"

namespace ckptio::cli {

enum class SourceKind {
  Safetensors,   // a file that is not one of the below (the safetensors reader validates it)
  TorchZip,      // torch.save zip archive (starts with "PK\x03\x04")
  TorchLegacy,   // legacy torch.save stream or raw pickle (starts with 0x80 PROTO)
  TorchTar,      // legacy tar format
  Directory,     // any folder: sharded model, checkpoint, experiment (decided by the handler)
  Missing,
};

SourceKind detect_source_kind(const std::filesystem::path& path);
std::string_view source_kind_name(SourceKind kind);

using ckptio::printable;

}  // namespace ckptio::cli
