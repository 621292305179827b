// Writes the files of a checkpoint inside its (fresh, private) temp folder: tensor sets as one
// safetensors file or a sharded set (the planner, names, index and file writer of
// ckptio/sharded.h and ckptio/safetensors.h, the same ones save_sharded uses) and small text
// files. Each file is created new, written, fsynced (when asked) and closed; its xxh3-128 is
// computed from the same bytes while they are written, so checksums cost no second pass over the
// disk. Nothing here renames: the folder commit (io::commit_folder) publishes the whole folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/io.h"
#include "ckptio/safetensors.h"

namespace ckptio::checkpoint {

struct WriteSettings {
  bool sync = true;
  bool checksums = true;
};

struct WrittenFile {
  std::string rel;  // relative to the checkpoint folder, '/'-separated
  uint64_t size = 0;
  std::string xxh3_128;  // empty when checksums are off
};

WrittenFile write_text_file(io::Env& env, const std::filesystem::path& root, const std::string& rel,
                            std::string_view text, const WriteSettings& settings);

// A set of tensors as planned by plan_shards: one file `<single_dir>/<base>.safetensors` when it
// fits in one shard, else `<sharded_dir>/<base>-0000k-of-0000N.safetensors` plus
// `<sharded_dir>/<base>.safetensors.index.json` (render_shard_index). Directories are relative to
// `root` ("" = root) and are created as needed.
std::vector<WrittenFile> write_tensor_set(io::Env& env, const std::filesystem::path& root,
                                          const std::string& single_dir,
                                          const std::string& sharded_dir, const std::string& base,
                                          std::span<const NamedTensor> tensors,
                                          uint64_t max_shard_bytes, const WriteSettings& settings);

}  // namespace ckptio::checkpoint
