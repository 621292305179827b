// Internal helpers of the experiment-folder catalog shared by CheckpointIO and the free functions.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ckptio/checkpoint_io.h"
#include "checkpoint/naming.h"
#include "ckptio/io.h"

namespace ckptio::checkpoint {


// Removes a checkpoint folder crash-safely: renames it to a temp name, fsyncs the experiment
// folder, then deletes the tree. A crash mid-delete leaves only a temp folder.
void remove_checkpoint_folder(io::Env& env, const std::filesystem::path& folder);

// Removes every checkpoint temp folder in the experiment folder (debris of crashed saves and
// interrupted prunes). Returns how many were removed.
size_t remove_temp_folders(io::Env& env, const std::filesystem::path& experiment_dir);

// Old checkpoints that a replace without RENAME_EXCHANGE moved aside (".<name>.replaced-<random>"):
// each one whose final name is empty (a crash between the two renames) is renamed back, with a
// warning; one whose final name holds the new checkpoint is removed. Returns how many were put
// back.
size_t recover_replaced_folders(io::Env& env, const std::filesystem::path& experiment_dir,
                                const std::function<void(const std::string&)>& warn);

// One more than the highest commit sequence number among the checkpoints of the folder.
uint64_t next_commit_sequence(io::Env& env, const std::filesystem::path& experiment_dir);

// Where a damaged folder at `final_name` is moved: the first free "<final_name>.damaged-<n>".
std::filesystem::path free_damaged_path(io::Env& env, const std::filesystem::path& experiment_dir,
                                        const std::string& final_name);

// The experiment folder's FileInfo, following it when it is a symbolic link to a folder.
io::FileInfo stat_experiment_dir(io::Env& env, const std::filesystem::path& experiment_dir);

// What a run knows that the folder listing does not.
struct PruneRules {
  // Folder names never removed (the checkpoint a save just committed); they count as kept.
  std::vector<std::string> never_remove;
  // Folder names known to be damaged (a checksum failed while loading): neither kept nor removed.
  std::vector<std::string> known_damaged;
  // Nothing at or before this folder in commit order is removed (the checkpoint a run resumed
  // from, until it commits a newer one).
  std::optional<std::string> keep_up_to;
};
std::vector<std::filesystem::path> prune_with_rules(io::Env& env,
                                                    const std::filesystem::path& experiment_dir,
                                                    size_t keep, const PruneRules& rules);

// After a save committed `final_name`: removes temp folders of crashed saves, puts back or removes
// folders an interrupted replace moved aside, and with keep_n_latest > 0 prunes by `rules` (never
// removing `final_name`, and no longer sparing what a run resumed from: this save is newer). The
// checkpoint is committed, so failing to tidy up is a warning, never an error.
void tidy_after_commit(io::Env& env, const std::filesystem::path& experiment_dir,
                       const std::string& final_name, size_t keep_n_latest, PruneRules rules,
                       const std::function<void(const std::string&)>& warn);

// Why the folder at a checkpoint's final name is not a committed checkpoint (its files do not
// match its manifest, checksums included, or it has no manifest and is no foreign checkpoint
// either); "" when it is one (or is no folder at all). A save may move such a folder aside.
std::string why_not_committed(io::Env& env, const std::filesystem::path& final_path);

// Reports a warning through `warn`, or to stderr when it is empty.
void emit_warning(const std::function<void(const std::string&)>& warn, const std::string& text);

}  // namespace ckptio::checkpoint
