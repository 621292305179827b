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

size_t recover_replaced_folders(io::Env& env, const fs::path& experiment_dir,
                                const std::function<void(const std::string&)>& warn) {
  if (!stat_experiment_dir(env, experiment_dir).is_directory) return 0;
  size_t restored = 0;
  bool changed = false;
  for (const std::string& name : env.list_dir(experiment_dir)) {
    const auto target = replaced_folder_target(name);
    if (!target) continue;
    const fs::path aside = experiment_dir / name;
    const fs::path final_path = experiment_dir / *target;
    if (env.stat(final_path).exists) {
      env.remove_all(aside);  // the replace that moved it aside committed its new checkpoint
    } else {
      env.rename(aside, final_path);
      ++restored;
      emit_warning(warn, "put back '" + final_path.string() +
                             "': a replace of it was interrupted before the new one was in place");
    }
    changed = true;
  }
  if (changed) env.sync_dir(experiment_dir);
  return restored;
}

uint64_t next_commit_sequence(io::Env& env, const fs::path& experiment_dir) {
  uint64_t highest = 0;
  if (!stat_experiment_dir(env, experiment_dir).is_directory) return 1;
  for (const std::string& name : env.list_dir(experiment_dir)) {
    if (!parse_checkpoint_folder_name(name)) continue;
    try {
      highest = std::max(highest, read_manifest(env, experiment_dir / name).sequence);
    } catch (const Error&) {
      // No manifest or a broken one: not a checkpoint, no place in the commit order.
    }
  }
  return highest + 1;
}

fs::path free_damaged_path(io::Env& env, const fs::path& experiment_dir,
                           const std::string& final_name) {
  for (uint64_t n = 1;; ++n) {
    const fs::path p = experiment_dir / damaged_folder_name(final_name, n);
    if (!env.stat(p).exists) return p;
  }
}

io::FileInfo stat_experiment_dir(io::Env& env, const fs::path& experiment_dir) {
  io::FileInfo info = env.stat(experiment_dir);
  if (info.is_symlink) {
    // lstat of "<link>/." is the stat of the folder the link points to.
    io::FileInfo target = env.stat(experiment_dir / ".");
    if (target.exists) return target;
  }
  return info;
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
    entry.sequence = manifest.sequence;
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

std::vector<CheckpointEntry> list_checkpoints(const fs::path& experiment_dir,
                                              const CheckpointFolderOptions& options) {
  io::Env& env = env_or_posix(options.env);
  const bool full = options.depth == VerifyDepth::Full;
  std::vector<CheckpointEntry> out;
  const io::FileInfo dir_info = checkpoint::stat_experiment_dir(env, experiment_dir);
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
      // A prune renames a folder away before deleting it: if this one went while we looked,
      // what we saw of it is not a checkpoint's state.
      if (entry.state != CheckpointState::Committed && !env.stat(entry.path).exists) continue;
    }
    out.push_back(std::move(entry));
  }
  std::sort(out.begin(), out.end(), [](const CheckpointEntry& a, const CheckpointEntry& b) {
    // Temp folders (saves in flight or crashed) last: they are not in the commit order yet.
    return std::tie(a.is_temp, a.sequence, a.global_step, a.epoch, a.name) <
           std::tie(b.is_temp, b.sequence, b.global_step, b.epoch, b.name);
  });
  return out;
}

std::optional<CheckpointEntry> latest_checkpoint(const fs::path& experiment_dir,
                                                 const CheckpointFolderOptions& options) {
  io::Env& env = env_or_posix(options.env);
  const bool full = options.depth == VerifyDepth::Full;
  const auto& warn = options.warn;
  const std::vector<CheckpointEntry> entries = list_checkpoints(experiment_dir, {.env = &env});
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

bool is_checkpoint_folder(const fs::path& path, const CheckpointFolderOptions& options) {
  io::Env& env = env_or_posix(options.env);
  const io::FileInfo info = env.stat(path);
  if (!info.is_directory) return false;
  return env.stat(path / kManifestName).exists || env.stat(path / kRunningStatesName).exists;
}

std::vector<fs::path> prune_checkpoints(const fs::path& experiment_dir, size_t keep,
                                        const CheckpointFolderOptions& options) {
  return checkpoint::prune_with_rules(env_or_posix(options.env), experiment_dir, keep, {});
}

namespace checkpoint {

std::vector<fs::path> prune_with_rules(io::Env& env, const fs::path& experiment_dir, size_t keep,
                                       const PruneRules& rules) {
  keep = std::max<size_t>(keep, 1);
  auto listed = [](const std::vector<std::string>& names, const std::string& name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  const std::vector<CheckpointEntry> entries = list_checkpoints(experiment_dir, {.env = &env});
  // Newest first in commit order.
  std::vector<const CheckpointEntry*> committed;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->is_temp || it->state != CheckpointState::Committed) continue;
    if (listed(rules.known_damaged, it->name)) continue;
    committed.push_back(&*it);
  }
  // Index (newest first) from which on nothing may go: the resumed-from checkpoint and older.
  size_t protected_from = committed.size();
  if (rules.keep_up_to) {
    for (size_t i = 0; i < committed.size(); ++i) {
      if (committed[i]->name == *rules.keep_up_to) protected_from = i;
    }
  }
  size_t kept = 0;
  for (const CheckpointEntry* e : committed) {
    if (listed(rules.never_remove, e->name)) ++kept;
  }
  std::vector<fs::path> removed;
  for (size_t i = 0; i < committed.size(); ++i) {
    const CheckpointEntry& e = *committed[i];
    if (listed(rules.never_remove, e.name)) continue;
    if (kept < keep) {
      ++kept;
      continue;
    }
    if (i >= protected_from) continue;
    remove_checkpoint_folder(env, e.path);
    removed.push_back(e.path);
  }
  return removed;
}

}  // namespace checkpoint

namespace checkpoint {

void tidy_after_commit(io::Env& env, const fs::path& experiment_dir, const std::string& final_name,
                       size_t keep_n_latest, PruneRules rules,
                       const std::function<void(const std::string&)>& warn) {
  try {
    remove_temp_folders(env, experiment_dir);
    recover_replaced_folders(env, experiment_dir, warn);
    if (keep_n_latest > 0) {
      rules.never_remove.push_back(final_name);
      rules.keep_up_to.reset();
      prune_with_rules(env, experiment_dir, keep_n_latest, rules);
    }
  } catch (const Error& err) {
    emit_warning(warn, "pruning '" + experiment_dir.string() + "' after saving '" +
                           (experiment_dir / final_name).string() + "': " + err.message());
  }
}

std::string why_not_committed(io::Env& env, const fs::path& final_path) {
  std::string problem;
  const io::FileInfo info = env.stat(final_path);
  if (info.is_directory && !info.is_symlink) {
    const VerifyReport report = verify_checkpoint(final_path, {.depth = VerifyDepth::Full, .env = &env});
    if (report.has_manifest && !report.ok) {
      for (const auto& p : report.problems) problem += (problem.empty() ? "" : "; ") + p;
    } else if (!report.has_manifest && !is_checkpoint_folder(final_path, {.env = &env})) {
      problem = "no " + std::string(kManifestName);
    }
  }
  return problem;
}

}  // namespace checkpoint

}  // namespace ckptio
