// `ckptio convert`: any readable source (safetensors file, sharded folder, training checkpoint or
// component, torch file) to one safetensors file or a sharded folder, with an optional dtype cast
// or torch storage deduplication, through convert_checkpoint (which verifies the output).
#pragma once

#include <filesystem>
#include <string>

#include "ckptio/load.h"

namespace ckptio::cli {

struct ConvertRequest {
  std::string label;              // the source as typed
  std::filesystem::path src;      // resolved by resolve_cli_source
  std::filesystem::path dst;
  SourceOptions source;           // torch_key, allowed_root
  std::string max_shard_size;     // raw option strings ("" when not given)
  std::string dtype;
  bool in_place = false;
  bool dedupe_shared = false;
};

int convert_any(const ConvertRequest& request);

}  // namespace ckptio::cli
