// Listing, choosing, verifying and pruning the checkpoints of an experiment folder.
#include <algorithm>
#include <iostream>

#include "checkpoint/catalog.h"
#include "checkpoint/manifest.h"
#include "checkpoint/naming.h"
#include "ckptio/error.h"

namespace ckptio {

namespace fs = std::filesystem;
using checkpoint::kManifestName;
using checkpoint::kRunningStatesName;

static io::Env& env_or_posix(io::Env* env) { return env ? *env : io::Env::posix(); }

namespace checkpoint {

void emit_warning(const std::function<void(const std::string&)>& warn, const std::string& text) {
  if (warn) {
    warn(text);
  } else {
    std::cerr << "ckptio: warning: " << text << "\n";
  }
}

void remove_checkpoint_folder(io::Env& env, const fs::path& folder) {
  const fs::path parent = folder.parent_path();
  const fs::path doomed = parent / temp_folder_name(folder.filename().string());
  env.rename(folder, doomed);
  env.sync_dir(parent);
  env.remove_all(doomed);
}

size_t remove_temp_folders(io::Env& env, const fs::path& experiment_dir) {
  size_t removed = 0;
  for (const std::string& name : env.list_dir(experiment_dir)) {
    if (!temp_folder_target(name)) continue;
    env.remove_all(experiment_dir / name);
    ++removed;
  }
  if (removed > 0) env.sync_dir(experiment_dir);
  return removed;
}

static uint64_t folder_bytes(io::Env& env, const fs::path& dir) {
  uint64_t total = 0;
  try {
    for (const auto& f : walk_files(env, dir)) total += f.info.size;
  } catch (const Error&) {
    // A folder that vanishes or is unreadable while listing shows as 0 bytes.
  }
  return total;
}

// Fills state/problem of an entry at a final name.
static void classify(io::Env& env, CheckpointEntry& entry, bool full) {
  const io::FileInfo manifest_info = env.stat(entry.path / kManifestName);
  if (!manifest_info.exists) {
    if (env.stat(entry.path / kRunningStatesName).exists) {
      entry.state = CheckpointState::Foreign;
      entry.problem = "no " + std::string(kManifestName) + " (a checkpoint written by another tool)";
    } else {
      entry.state = CheckpointState::Incomplete;
      entry.problem = "no " + std::string(kManifestName);
    }
    return;
  }
  try {
    const Manifest manifest = read_manifest(env, entry.path);
    if (manifest.epoch != entry.epoch || manifest.global_step != entry.global_step) {
      entry.state = CheckpointState::Damaged;
      entry.problem = std::string(kManifestName) + ": records epoch " +
                      std::to_string(manifest.epoch) + " global_step " +
                      std::to_string(manifest.global_step) + ", not the folder's";
      return;
    }
    const ManifestCheck check = check_manifest(env, entry.path, manifest, full);
    if (!check.problems.empty()) {
      entry.state = CheckpointState::Damaged;
      entry.problem = check.problems.front();
      for (size_t i = 1; i < check.problems.size(); ++i) entry.problem += "; " + check.problems[i];
      return;
    }
    entry.state = CheckpointState::Committed;
  } catch (const Error& e) {
    entry.state = CheckpointState::Damaged;
    entry.problem = std::string(kManifestName) + ": " + e.message();
  }
}

}  // namespace checkpoint

std::vector<CheckpointEntry> list_checkpoints(const fs::path& experiment_dir, bool full,
                                              io::Env* env_ptr) {
  io::Env& env = env_or_posix(env_ptr);
  std::vector<CheckpointEntry> out;
  const io::FileInfo dir_info = env.stat(experiment_dir);
  if (!dir_info.exists) return out;
  if (!dir_info.is_directory) {
    throw Error(ErrorCode::InvalidArgument,
                "'" + experiment_dir.string() + "' is not a folder of checkpoints");
  }
  for (const std::string& name : env.list_dir(experiment_dir)) {
    CheckpointEntry entry;
    entry.name = name;
    entry.path = experiment_dir / name;
    std::optional<std::pair<int64_t, int64_t>> parsed;
    if (auto target = checkpoint::temp_folder_target(name)) {
      parsed = parse_checkpoint_folder_name(*target);
      entry.is_temp = true;
    } else {
      parsed = parse_checkpoint_folder_name(name);
    }
    if (!parsed) continue;
    const io::FileInfo info = env.stat(entry.path);
    if (!info.is_directory || info.is_symlink) continue;
    entry.epoch = parsed->first;
    entry.global_step = parsed->second;
    entry.size_bytes = checkpoint::folder_bytes(env, entry.path);
    if (entry.is_temp) {
      entry.state = CheckpointState::Incomplete;
      entry.problem = "temp folder of an interrupted save or prune";
    } else {
      checkpoint::classify(env, entry, full);
    }
    out.push_back(std::move(entry));
  }
  std::sort(out.begin(), out.end(), [](const CheckpointEntry& a, const CheckpointEntry& b) {
    return std::tie(a.global_step, a.epoch, a.is_temp, a.name) <
           std::tie(b.global_step, b.epoch, b.is_temp, b.name);
  });
  return out;
}

std::optional<CheckpointEntry> latest_checkpoint(const fs::path& experiment_dir, bool full,
                                                 io::Env* env_ptr,
                                                 const std::function<void(const std::string&)>& warn) {
  io::Env& env = env_or_posix(env_ptr);
  const std::vector<CheckpointEntry> entries = list_checkpoints(experiment_dir, false, &env);
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->is_temp || it->state == CheckpointState::Foreign) continue;
    if (it->state == CheckpointState::Incomplete) {
      checkpoint::emit_warning(warn, "skipping '" + it->path.string() + "': " + it->problem);
      continue;
    }
    CheckpointEntry entry = *it;
    if (entry.state == CheckpointState::Committed && full) checkpoint::classify(env, entry, true);
    if (entry.state != CheckpointState::Committed) {
      checkpoint::emit_warning(warn, "skipping damaged checkpoint '" + entry.path.string() +
                                         "': " + entry.problem);
      continue;
    }
    return entry;
  }
  return std::nullopt;
}

bool is_checkpoint_folder(const fs::path& path, io::Env* env_ptr) {
  io::Env& env = env_or_posix(env_ptr);
  const io::FileInfo info = env.stat(path);
  if (!info.is_directory) return false;
  return env.stat(path / kManifestName).exists || env.stat(path / kRunningStatesName).exists;
}

std::vector<fs::path> prune_checkpoints(const fs::path& experiment_dir, size_t keep,
                                        io::Env* env_ptr) {
  io::Env& env = env_or_posix(env_ptr);
  keep = std::max<size_t>(keep, 1);
  const std::vector<CheckpointEntry> entries = list_checkpoints(experiment_dir, false, &env);
  std::vector<const CheckpointEntry*> committed;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (!it->is_temp && it->state == CheckpointState::Committed) committed.push_back(&*it);
  }
  std::vector<fs::path> removed;
  for (size_t i = keep; i < committed.size(); ++i) {
    checkpoint::remove_checkpoint_folder(env, committed[i]->path);
    removed.push_back(committed[i]->path);
  }
  return removed;
}

}  // namespace ckptio
