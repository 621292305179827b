// What a SOURCE argument names: the same rules for inspect, verify, convert and diff.
//   hf://org/name[@revision][/path]  the Hugging Face Hub (through the shared cache); the only
//                                    form that may reach the network
//   a path that exists               that file or folder
//   CKPT/model, CKPT/ema, CKPT/optimizer
//                                    that component of the training checkpoint folder CKPT,
//                                    whatever form it has on disk (ema.safetensors, ema/, ema.pt)
// Anything else is Error(NotFound).
#pragma once

#include <filesystem>
#include <string>

#include "ckptio/load.h"

namespace ckptio::cli {

struct CliSource {
  std::string spec;             // as typed, for messages
  std::filesystem::path path;   // a local file or folder, or CKPT/<component>
  SourceOptions options;        // allowed_root set for Hub snapshots (symlinks into blobs/)
  bool component = false;       // CKPT/<component> that is not itself a folder on disk
};

CliSource resolve_cli_source(const std::string& spec);

}  // namespace ckptio::cli
