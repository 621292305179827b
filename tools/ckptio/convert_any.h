// The general branch of `ckptio convert`: any readable source (safetensors file, sharded folder,
// training checkpoint, torch file) to one safetensors file or a sharded folder, with an optional
// dtype cast. cmd_convert.cpp routes here whenever the torch-specific converter does not apply.
#pragma once

#include <string>

namespace ckptio::cli {

// `key` (dotted path inside a torch file), `max_shard_size` and `dtype` are the raw option
// strings ("" when not given).
int convert_any(const std::string& src, const std::string& dst, const std::string& key,
                const std::string& max_shard_size, const std::string& dtype);

}  // namespace ckptio::cli
