// The folder branch of `ckptio inspect` and `ckptio verify`: sharded safetensors folders (and
// pytorch_model.bin.index.json folders) with per-shard sizes and totals.
#pragma once

#include <filesystem>

namespace ckptio::cli {

// True when `dir` is a folder holding an index (*.index.json) or a lone model.safetensors, i.e.
// something inspect_sharded/verify_sharded_folder handle.
bool is_sharded_folder(const std::filesystem::path& dir);
// Index flavour, shards with their sizes and tensor counts, metadata, totals; --json too.
int inspect_sharded(const std::filesystem::path& dir, bool json);
// Every check of the reader on every shard, every tensor read once; warnings (total_size,
// unreferenced shards) are printed but do not fail. Exit 0 when valid.
int verify_sharded_folder(const std::filesystem::path& dir);

}  // namespace ckptio::cli
