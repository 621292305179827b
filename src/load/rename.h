// Source-name handling shared by load and convert: prefix renames and collision checks.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ckptio::detail {

// The first pair whose `first` prefixes `name` rewrites it; otherwise the name is unchanged.
std::string rename_key(const std::string& name,
                       const std::vector<std::pair<std::string, std::string>>& rename_keys);

}  // namespace ckptio::detail
