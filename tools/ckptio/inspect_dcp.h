#pragma once

#include <filesystem>

namespace ckptio::cli {

// A PyTorch DCP folder: every tensor with its global shape, dtype and chunks (box, data file,
// offset, length), every non-tensor value with what it holds (human text or --json).
int inspect_dcp(const std::filesystem::path& dir, bool json);
// Reads every item and checks it against the metadata (dtype, box shape, the zip records' CRC-32).
int verify_dcp(const std::filesystem::path& dir);

}  // namespace ckptio::cli
