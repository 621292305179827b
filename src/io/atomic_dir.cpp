// Crash-safe publication of a whole folder: build it under a temp name, fsync everything, rename,
// fsync the parent. Readers never see a half-written folder under the final name.
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

void AtomicDir::commit(bool replace, bool sync_files) {
  if (committed_) {
    throw Error(ErrorCode::InvalidArgument, quoted(final_) + " was already committed");
  }
  const fs::path parent = final_.parent_path();
  sync_tree(env_, temp_, sync_files);
  const FileInfo existing = env_.stat(final_);
  if (!existing.exists) {
    // rename(2) onto a missing name; an empty folder created meanwhile would be replaced, a
    // non-empty one makes rename fail, and either way the result is one whole folder.
    env_.rename(temp_, final_);
    committed_ = true;
    env_.sync_dir(parent);
    return;
  }
  if (!replace) {
    throw Error(ErrorCode::AlreadyExists,
                quoted(final_) + " exists; refusing to replace it (pass replace to overwrite)");
  }
  if (!existing.is_directory) {
    throw Error(ErrorCode::AlreadyExists,
                quoted(final_) + " exists and is not a folder; refusing to replace it");
  }
  try {
    env_.exchange(temp_, final_);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::Unsupported) throw;
    // No atomic swap on this filesystem: move the old folder aside under a temp name first. A
    // crash between the two renames leaves no folder under the final name, but both versions
    // survive under recognisable temp names.
    const fs::path aside = temp_path_for(final_);
    env_.rename(final_, aside);
    try {
      env_.rename(temp_, final_);
    } catch (...) {
      env_.rename(aside, final_);  // put the old folder back before reporting
      throw;
    }
    committed_ = true;
    env_.sync_dir(parent);
    remove_old_version(aside);
    return;
  }
  committed_ = true;
  env_.sync_dir(parent);
  remove_old_version(temp_);  // after the swap, temp_ holds the old folder
}

void AtomicDir::remove_old_version(const fs::path& old) {
  try {
    env_.remove_all(old);
  } catch (...) {
    // The new folder is published and durable; the old one is a recognisable leftover.
  }
}

std::vector<std::string> remove_temp_leftovers(Env& env, const fs::path& dir,
                                               std::string_view name) {
  std::vector<std::string> removed;
  const fs::path d = dir.empty() ? fs::path(".") : dir;
  if (!env.stat(d).exists) return removed;
  const std::string prefix = name.empty() ? std::string() : "." + std::string(name) + ".tmp-";
  for (const std::string& entry : env.list_dir(d)) {
    if (!is_temp_name(entry)) continue;
    if (!prefix.empty() && entry.rfind(prefix, 0) != 0) continue;
    env.remove_all(d / entry);
    removed.push_back(entry);
  }
  if (!removed.empty()) env.sync_dir(d);
  return removed;
}

}  // namespace ckptio::io
