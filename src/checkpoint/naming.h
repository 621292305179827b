// Names of checkpoint folders and of the temp folders a save builds them in.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace ckptio::checkpoint {

// ".epoch{E}-global_step{S}.tmp-<random>"; is_temp_name() of io.h recognises it.
std::string temp_folder_name(std::string_view final_name);
// The final name a temp folder was building, when `name` is one of ours.
std::optional<std::string> temp_folder_target(std::string_view name);

}  // namespace ckptio::checkpoint
