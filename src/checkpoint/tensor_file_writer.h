// Writes the files of a checkpoint inside its (fresh, private) temp folder: safetensors files and
// sharded sets streamed from the tensors' own memory, and small text files. Each file is created
// new, written, fsynced (when asked) and closed; its xxh3-128 is computed from the same bytes while
// they are written, so checksums cost no second pass over the disk.
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
  bool fsync = true;
  bool checksums = true;
};

struct WrittenFile {
  std::string rel;  // relative to the checkpoint folder, '/'-separated
  uint64_t size = 0;
  std::string xxh3_128;  // empty when checksums are off
};

WrittenFile write_text_file(io::Env& env, const std::filesystem::path& root, const std::string& rel,
                            std::string_view text, const WriteSettings& settings);

WrittenFile write_safetensors_file(io::Env& env, const std::filesystem::path& root,
                                   const std::string& rel, std::span<const NamedTensor> tensors,
                                   const WriteSettings& settings);

// Greedy in input order: a new shard when the next tensor would overflow `max_shard_bytes`, a
// tensor larger than the limit alone in its shard. Returns index ranges [begin, end).
std::vector<std::pair<size_t, size_t>> plan_shards(std::span<const NamedTensor> tensors,
                                                   uint64_t max_shard_bytes);

// A set of tensors as one file `<single_dir>/<base>.safetensors` when it fits in one shard, else
// `<sharded_dir>/<base>-0000k-of-0000N.safetensors` plus `<sharded_dir>/<base>.safetensors.index.json`
// (Hugging Face layout, total_size in bytes). Directories are relative to `root` ("" = root) and
// are created as needed. Folders written into are appended to `dirs_written`.
std::vector<WrittenFile> write_tensor_set(io::Env& env, const std::filesystem::path& root,
                                          const std::string& single_dir,
                                          const std::string& sharded_dir, const std::string& base,
                                          std::span<const NamedTensor> tensors,
                                          uint64_t max_shard_bytes, const WriteSettings& settings,
                                          std::vector<std::string>& dirs_written);

}  // namespace ckptio::checkpoint
