// Which files of a folder belong to a sharded save with a given base name, so that a new save can
// remove what an earlier one left and `verify` can point at shards nobody references.
#pragma once

#include <string_view>

namespace ckptio::detail {

// "<base>.safetensors", "<base>-00001-of-00003.safetensors", "<base>-00001.safetensors" (the
// ColossalAI naming) and "<base>.safetensors.index.json".
bool is_shard_family_name(std::string_view name, std::string_view base);
// Temp files a crashed save of this family left: ".<family name>.tmp-<random>".
bool is_shard_family_temp_name(std::string_view name, std::string_view base);
// Shard-like names only (no index), with either suffix: used to find unreferenced shards.
bool is_shard_like_name(std::string_view name, std::string_view base, std::string_view suffix);

}  // namespace ckptio::detail
