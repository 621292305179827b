// Crash-safe publication of a whole folder: build it under a temp name, fsync everything, rename,
// fsync the parent. Readers never see a half-written folder under the final name.
#include <optional>
#include <string>

#include "ckptio/error.h"
#include "ckptio/io.h"

namespace ckptio::io {
namespace {

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// fsync every regular file below `dir`, then each folder after its contents (so that a folder's
// entries are durable before the folder itself is renamed into place).
void sync_tree(Env& env, const fs::path& dir, bool sync_files) {
  for (const std::string& name : env.list_dir(dir)) {
    const fs::path p = dir / name;
    const FileInfo info = env.stat(p);
    if (info.is_symlink) continue;
    if (info.is_directory) {
      sync_tree(env, p, sync_files);
    } else if (sync_files) {
      auto file = env.open_write(p, OpenMode::Existing);
      file->sync();
      file->close();
    }
  }
  env.sync_dir(dir);
}

}  // namespace

fs::path temp_path_for(const fs::path& path) {
  fs::path name = path.filename();
  if (name.empty()) name = path.parent_path().filename();  // "a/b/" names folder b
  const fs::path dir = path.filename().empty() ? path.parent_path().parent_path() : path.parent_path();
  return dir / ("." + name.string() + ".tmp-" + random_suffix());
}

fs::path replaced_path_for(const fs::path& path) {
  return path.parent_path() / ("." + path.filename().string() + ".replaced-" + random_suffix());
}

std::optional<std::string> replaced_target(std::string_view name) {
  if (!name.starts_with('.')) return std::nullopt;
  const size_t mark = name.rfind(".replaced-");
  if (mark == std::string_view::npos || mark < 2) return std::nullopt;
  return std::string(name.substr(1, mark - 1));
}

namespace {

// fsync of the parent after `final_path` was renamed in; on failure the rename may not be durable
// and the commit is reported as failed, so the new folder goes back to `temp` (a retry does not
// find it in the way) and `aside`, when given, back to the final name.
void sync_or_take_back(Env& env, const fs::path& temp, const fs::path& final_path,
                       const fs::path& aside, const FolderCommitOptions& options) {
  if (!options.sync) return;
  try {
    env.sync_dir(final_path.parent_path());
  } catch (...) {
    try {
      env.rename(final_path, temp);
      if (!aside.empty()) env.rename(aside, final_path);
    } catch (...) {
      // The first error is the one to report; a crash-like Env refuses everything here.
    }
    throw;
  }
}

void remove_old_version(Env& env, const fs::path& old, const FolderCommitOptions& options) {
  try {
    env.remove_all(old);
  } catch (const Error& e) {
    // The new folder is published and durable; the old one is a recognisable leftover.
    if (options.warn) options.warn("removing the replaced folder '" + old.string() + "': " + e.message());
  }
}

// The old folder aside, the new one in, the parent fsynced; every failure before that puts the
// old one back.
void move_aside_and_commit(Env& env, const fs::path& temp, const fs::path& final_path,
                           const fs::path& aside, const FolderCommitOptions& options) {
  env.rename(final_path, aside);
  try {
    env.rename(temp, final_path);
  } catch (...) {
    try {
      env.rename(aside, final_path);
    } catch (...) {
    }
    throw;
  }
  sync_or_take_back(env, temp, final_path, aside, options);
}

}  // namespace

void commit_folder(Env& env, const fs::path& temp, const fs::path& final_path,
                   const FolderCommitOptions& options) {
  const fs::path parent = final_path.parent_path();
  if (options.sync) sync_tree(env, temp, options.sync_files);
  const FileInfo existing = env.stat(final_path);
  if (!existing.exists) {
    // rename(2) onto a missing name; an empty folder created meanwhile would be replaced, a
    // non-empty one makes rename fail, and either way the result is one whole folder.
    env.rename(temp, final_path);
    sync_or_take_back(env, temp, final_path, {}, options);
    return;
  }
  if (options.if_exists == IfExists::Fail) {
    throw Error(ErrorCode::AlreadyExists,
                quoted(final_path) + " already exists; refusing to replace it (ask to replace it)");
  }
  if (!existing.is_directory) {
    throw Error(ErrorCode::AlreadyExists,
                quoted(final_path) + " exists and is not a folder; refusing to replace it");
  }
  if (options.if_exists == IfExists::MoveAside) {
    if (options.aside.empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  "moving " + quoted(final_path) + " aside needs a name to move it to");
    }
    move_aside_and_commit(env, temp, final_path, options.aside, options);
    return;
  }
  // RENAME_EXCHANGE swaps the two atomically, so a reader sees the old folder or the new one,
  // never neither.
  try {
    env.exchange(temp, final_path);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::Unsupported) throw;
    const fs::path aside = options.aside.empty() ? replaced_path_for(final_path) : options.aside;
    move_aside_and_commit(env, temp, final_path, aside, options);
    remove_old_version(env, aside, options);
    return;
  }
  // `temp` now holds the old folder under a temp name: debris if we crash here.
  if (options.sync) {
    try {
      env.sync_dir(parent);
    } catch (...) {
      try {
        env.exchange(temp, final_path);  // the commit failed: put the old folder back
      } catch (...) {
      }
      throw;
    }
  }
  remove_old_version(env, temp, options);
}

AtomicDir::AtomicDir(Env& env, fs::path final_path) : env_(env), final_(std::move(final_path)) {
  if (final_.filename().empty()) final_ = final_.parent_path();
  if (final_.filename().empty() || final_.filename() == "." || final_.filename() == "..") {
    throw Error(ErrorCode::InvalidArgument,
                "cannot commit a folder atomically to " + quoted(final_) + ": it has no name");
  }
  temp_ = temp_path_for(final_);
  const fs::path parent = final_.parent_path();
  if (!parent.empty()) create_dirs_synced(env_, parent);  // a new parent must survive a power cut
  env_.create_dirs(temp_);
}

AtomicDir::~AtomicDir() {
  if (committed_) return;
  try {
    env_.remove_all(temp_);
  } catch (...) {
    // A leftover temp folder is recognisable by its name; remove_temp_leftovers cleans it later.
  }
}

void AtomicDir::commit(const FolderCommitOptions& options) {
  if (committed_) {
    throw Error(ErrorCode::InvalidArgument, quoted(final_) + " was already committed");
  }
  commit_folder(env_, temp_, final_, options);
  committed_ = true;
}

std::vector<std::string> remove_temp_leftovers(Env& env, const fs::path& dir,
                                               std::string_view name) {
  std::vector<std::string> removed;
  const fs::path d = dir.empty() ? fs::path(".") : dir;
  if (!env.stat(d).exists) return removed;
  const std::string prefix = name.empty() ? std::string() : "." + std::string(name) + ".tmp-";
  bool restored = false;
  for (const std::string& entry : env.list_dir(d)) {
    if (const auto target = replaced_target(entry); target && (name.empty() || *target == name)) {
      // An interrupted replace: the old version is the one to keep when nothing took its place.
      if (env.stat(d / *target).exists) {
        env.remove_all(d / entry);
        removed.push_back(entry);
      } else {
        env.rename(d / entry, d / *target);
        restored = true;
      }
      continue;
    }
    if (!is_temp_name(entry)) continue;
    if (!prefix.empty() && entry.rfind(prefix, 0) != 0) continue;
    env.remove_all(d / entry);
    removed.push_back(entry);
  }
  if (!removed.empty() || restored) env.sync_dir(d);
  return removed;
}

}  // namespace ckptio::io
