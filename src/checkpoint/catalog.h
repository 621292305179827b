// Internal helpers of the experiment-folder catalog shared by CheckpointIO and the free functions.
#pragma once

#include <filesystem>
#include <string>

#include "ckptio/checkpoint_io.h"
#include "ckptio/io.h"

namespace ckptio::checkpoint {

inline constexpr std::string_view kRunningStatesName = "running_states.json";

// Removes a checkpoint folder crash-safely: renames it to a temp name, fsyncs the experiment
// folder, then deletes the tree. A crash mid-delete leaves only a temp folder.
void remove_checkpoint_folder(io::Env& env, const std::filesystem::path& folder);

// Removes every checkpoint temp folder in the experiment folder (debris of crashed saves and
// interrupted prunes). Returns how many were removed.
size_t remove_temp_folders(io::Env& env, const std::filesystem::path& experiment_dir);

// Reports a warning through `warn`, or to stderr when it is empty.
void emit_warning(const std::function<void(const std::string&)>& warn, const std::string& text);

}  // namespace ckptio::checkpoint
