// One repo's folder in the shared Hugging Face cache: refs, snapshots, blobs, .no_exist markers
// and lock paths, with the read-only lookup that mirrors huggingface_hub's
// try_to_load_from_cache. Stateless apart from its paths, so threads may share one.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "ckptio/io.h"

namespace ckptio::hub {

namespace fs = std::filesystem;

enum class CacheState : uint8_t {
  Hit,      // snapshots/<commit>/<path> exists and points at a blob
  NoExist,  // a .no_exist marker says the file is not in that commit
  Miss,     // the cache cannot answer
};

struct CacheLookup {
  CacheState state = CacheState::Miss;
  fs::path path;       // the snapshot file for Hit
  std::string commit;  // the commit the revision resolved to, when known
};

class RepoCache {
 public:
  RepoCache(io::Env& env, fs::path cache_dir, std::string_view repo_id);

  const fs::path& cache_dir() const { return cache_dir_; }
  const fs::path& repo_dir() const { return repo_dir_; }
  fs::path blobs_dir() const { return repo_dir_ / "blobs"; }
  fs::path blob_path(std::string_view etag) const;
  fs::path snapshot_dir(std::string_view commit) const;
  fs::path pointer_path(std::string_view commit, std::string_view path) const;
  fs::path lock_path(std::string_view etag) const;

  // The commit of refs/<revision>, or the revision itself when it is a commit hash; nullopt when
  // there is no (valid) ref.
  std::optional<std::string> commit_for(std::string_view revision) const;
  // Writes refs/<revision> atomically when it does not already hold `commit`.
  void write_ref(std::string_view revision, std::string_view commit);

  CacheLookup lookup(std::string_view revision, std::string_view path) const;
  // True when snapshots/<commit>/<path> resolves to an existing file.
  bool has_pointer(std::string_view commit, std::string_view path) const;

  // Creates the empty .no_exist/<commit>/<path> marker.
  void mark_no_exist(std::string_view commit, std::string_view path);
  // Makes snapshots/<commit>/<path> a relative symlink to blobs/<etag>, replacing any previous
  // link atomically (symlink under a temp name, then rename).
  void link_pointer(std::string_view commit, std::string_view path, std::string_view etag);

 private:
  io::Env& env_;
  fs::path cache_dir_;
  fs::path repo_dir_;
  std::string folder_name_;
};

}  // namespace ckptio::hub
