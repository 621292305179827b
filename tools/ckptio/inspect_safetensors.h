#pragma once

#include <filesystem>

namespace ckptio::cli {

// Prints the tensors, metadata and totals of a safetensors file (human table or --json).
int inspect_safetensors(const std::filesystem::path& path, bool json);
// Full validation of a safetensors file; prints a one-line summary.
int verify_safetensors(const std::filesystem::path& path);

}  // namespace ckptio::cli
