// The CLI's view of training checkpoint folders (ckptio's and Open-Sora's): used by ls, prune,
// verify and inspect.
#pragma once

#include <filesystem>

namespace ckptio::cli {

// A folder holding ckptio.manifest.json or running_states.json.
bool is_training_checkpoint(const std::filesystem::path& path);

// `ckptio verify CKPT [--full]`: every file against the manifest (checksums with full); for an
// Open-Sora folder, that every part parses (and with full, every tensor reads). 0 ok, 1 problems.
int verify_training_checkpoint(const std::filesystem::path& path, bool full);

// `ckptio inspect CKPT [--json]`: running states, components and files with sizes.
int inspect_training_checkpoint(const std::filesystem::path& path, bool json);

}  // namespace ckptio::cli
