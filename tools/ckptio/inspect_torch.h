#pragma once

#include <filesystem>

namespace ckptio::cli {

// Prints a torch.save file (.pt/.pth/.bin): the container, the whole object tree with non-tensor
// values, and every tensor with its dtype, shape, view and storage (human text or --json). Loads
// through the restricted unpickler, so hostile files fail with Unsafe before anything is shown.
int inspect_torch(const std::filesystem::path& path, bool json);

}  // namespace ckptio::cli
