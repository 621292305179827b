// Names of checkpoint folders and of the temp folders a save builds them in; the names inside a
// checkpoint folder are in ckptio/checkpoint_layout.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "ckptio/checkpoint_layout.h"

namespace ckptio::checkpoint {

// ".epoch{E}-global_step{S}.tmp-<random>"; is_temp_name() of io.h recognises it.
std::string temp_folder_name(std::string_view final_name);
// The final name a temp folder was building, when `name` is one of ours.
std::optional<std::string> temp_folder_target(std::string_view name);

// ".epoch{E}-global_step{S}.replaced-<random>": where a replace without RENAME_EXCHANGE keeps the
// old checkpoint until the new one is durable.
std::string replaced_folder_name(std::string_view final_name);
// The final name such a folder was moved aside from, when `name` is one.
std::optional<std::string> replaced_folder_target(std::string_view name);

// "epoch{E}-global_step{S}.damaged-<n>": a folder that did not verify, moved aside by a save.
std::string damaged_folder_name(std::string_view final_name, uint64_t n);

}  // namespace ckptio::checkpoint
