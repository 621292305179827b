// Cache reads and writes for one repo folder.
#include "hub/repo_cache.h"

#include "ckptio/hub.h"
#include "hub/names.h"

namespace ckptio::hub {

RepoCache::RepoCache(io::Env& env, fs::path cache_dir, std::string_view repo_id)
    : env_(env), cache_dir_(std::move(cache_dir)), folder_name_(repo_folder_name(repo_id)) {
  repo_dir_ = cache_dir_ / folder_name_;
}

fs::path RepoCache::blob_path(std::string_view etag) const { return blobs_dir() / std::string(etag); }

fs::path RepoCache::snapshot_dir(std::string_view commit) const {
  return repo_dir_ / "snapshots" / std::string(commit);
}

fs::path RepoCache::pointer_path(std::string_view commit, std::string_view path) const {
  return snapshot_dir(commit) / std::string(path);
}

fs::path RepoCache::lock_path(std::string_view etag) const {
  return cache_dir_ / ".locks" / folder_name_ / (std::string(etag) + ".lock");
}

std::optional<std::string> RepoCache::commit_for(std::string_view revision) const {
  if (is_commit_hash(revision)) return std::string(revision);
  const fs::path ref = repo_dir_ / "refs" / std::string(revision);
  const io::FileInfo info = env_.stat(ref);
  if (!info.exists || info.is_directory) return std::nullopt;
  std::string text = io::read_small_file(env_, ref, 4096);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  // A ref that does not hold a commit is treated as absent: the next online call rewrites it.
  if (!is_commit_hash(text)) return std::nullopt;
  return text;
}

void RepoCache::write_ref(std::string_view revision, std::string_view commit) {
  if (revision == commit) return;
  if (commit_for(revision) == std::string(commit)) return;
  const fs::path ref = repo_dir_ / "refs" / std::string(revision);
  io::create_dirs_synced(env_, ref.parent_path());
  io::write_file_atomic(env_, ref, commit);
}

bool RepoCache::has_pointer(std::string_view commit, std::string_view path) const {
  return env_.stat_target(pointer_path(commit, path)).is_regular_file;
}

CacheLookup RepoCache::lookup(std::string_view revision, std::string_view path) const {
  CacheLookup out;
  const auto commit = commit_for(revision);
  if (!commit) return out;
  out.commit = *commit;
  if (env_.stat(repo_dir_ / ".no_exist" / *commit / std::string(path)).exists) {
    out.state = CacheState::NoExist;
    return out;
  }
  if (has_pointer(*commit, path)) {
    out.state = CacheState::Hit;
    out.path = pointer_path(*commit, path);
  }
  return out;
}

void RepoCache::mark_no_exist(std::string_view commit, std::string_view path) {
  const fs::path marker = repo_dir_ / ".no_exist" / std::string(commit) / std::string(path);
  env_.create_dirs(marker.parent_path());
  if (!env_.stat(marker).exists) {
    // An empty marker carries no data, so a torn write cannot mislead a reader.
    env_.open_write(marker, io::OpenMode::Truncate)->close();
  }
}

void RepoCache::link_pointer(std::string_view commit, std::string_view path, std::string_view etag) {
  const fs::path pointer = pointer_path(commit, path);
  const fs::path dir = pointer.parent_path();
  io::create_dirs_synced(env_, dir);
  // From snapshots/<commit>/<a>/<b>/<file>: one "../" per folder below the commit, then
  // "../../blobs/<etag>". Relative, so the cache can be moved.
  std::string target;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '/') target += "../";
  }
  target += "../../blobs/" + std::string(etag);
  const fs::path temp = dir / ("." + pointer.filename().string() + ".tmp-" + io::random_suffix());
  env_.create_symlink(target, temp);
  try {
    env_.rename(temp, pointer);
  } catch (...) {
    env_.remove(temp);
    throw;
  }
  env_.sync_dir(dir);
}

}  // namespace ckptio::hub
