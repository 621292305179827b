// Resolving Hub files and models: cache first when the revision is a commit or we are offline,
// otherwise metadata from the Hub, a verified download when the blob is missing, and the cache as
// the answer when the network fails.
#include "ckptio/hub.h"

#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "ckptio/error.h"
#include "hub/blob_download.h"
#include "hub/names.h"
#include "hub/progress.h"
#include "hub/protocol.h"
#include "hub/repo_cache.h"
#include "hub/settings.h"
#include "core/executor.h"

namespace ckptio::hub {
namespace {

constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kSingleFile = "model.safetensors";
constexpr uint64_t kMaxIndexBytes = 64u << 20;
constexpr size_t kMaxShards = 100000;

struct Fetched {
  fs::path pointer;      // snapshots/<commit>/<path> (empty when missing)
  std::string commit;    // when known
  bool missing = false;  // the file is not in the repo (only with missing_ok)
};

void require_repo_id(std::string_view repo_id) {
  const size_t slash = repo_id.find('/');
  if (slash == std::string_view::npos || !is_valid_repo_part(repo_id.substr(0, slash)) ||
      !is_valid_repo_part(repo_id.substr(slash + 1))) {
    throw Error(ErrorCode::InvalidArgument,
                "'" + std::string(repo_id) + "' is not a Hub repo id of the form org/name");
  }
}

std::string effective_revision(const HubOptions& options) {
  std::string revision = options.revision.empty() ? "main" : options.revision;
  if (!is_valid_revision(revision)) {
    throw Error(ErrorCode::InvalidArgument, "'" + revision + "' is not a valid revision");
  }
  return revision;
}

Error offline_miss(const Settings& settings, const FileRef& ref, const std::string& why) {
  return Error(ErrorCode::NotFound, "offline mode: " + ref.describe() + " is not in the cache at '" +
                                        settings.cache_dir.string() + "'" + why);
}

// One file, as hf_hub_download does it. With missing_ok, a file the repo does not have comes back
// as Fetched{missing=true} instead of an error.
Fetched fetch_file(const Settings& settings, RepoCache& cache, const FileRef& ref,
                   Progress& progress, bool missing_ok) {
  // A commit is immutable: a cached copy needs no network call.
  if (is_commit_hash(ref.revision) && cache.has_pointer(ref.revision, ref.path)) {
    return {cache.pointer_path(ref.revision, ref.path), ref.revision, false};
  }
  if (settings.offline) {
    const CacheLookup hit = cache.lookup(ref.revision, ref.path);
    if (hit.state == CacheState::Hit) return {hit.path, hit.commit, false};
    if (missing_ok) return {{}, hit.commit, true};
    if (hit.state == CacheState::NoExist) {
      throw Error(ErrorCode::NotFound, "file " + ref.describe() +
                                           " does not exist (recorded in the cache's .no_exist)");
    }
    throw offline_miss(settings, ref, hit.commit.empty() ? " (no refs/" + ref.revision + ")" : "");
  }

  HttpClient http;
  MetadataResult meta = fetch_metadata(http, settings, ref);
  if (!meta.metadata) {
    if (meta.entry_missing) {
      if (!meta.missing_commit.empty()) {
        // As huggingface_hub does: remember both the absence and what the revision points at.
        cache.mark_no_exist(meta.missing_commit, ref.path);
        cache.write_ref(ref.revision, meta.missing_commit);
      }
      if (missing_ok) return {{}, meta.missing_commit, true};
      throw *meta.error;
    }
    if (meta.cache_may_answer) {
      const CacheLookup hit = cache.lookup(ref.revision, ref.path);
      if (hit.state == CacheState::Hit) return {hit.path, hit.commit, false};
    }
    throw meta.error->annotate(meta.cache_may_answer ? "no cached copy either" : "hub");
  }
  const FileMetadata& m = *meta.metadata;
  cache.write_ref(ref.revision, m.commit);
  if (cache.has_pointer(m.commit, ref.path)) return {cache.pointer_path(m.commit, ref.path), m.commit, false};
  download_blob(http, settings, cache, ref, m, progress);
  cache.link_pointer(m.commit, ref.path, m.etag);
  return {cache.pointer_path(m.commit, ref.path), m.commit, false};
}

// Copies a resolved file to <local_dir>/<path> atomically and returns that path.
fs::path copy_to_local_dir(const Settings& settings, const fs::path& source, std::string_view path) {
  io::Env& env = *settings.env;
  const fs::path dest = settings.local_dir / std::string(path);
  io::create_dirs_synced(env, dest.parent_path());
  auto in = env.open_read(source);
  io::write_file_atomic(env, dest, [&](io::WritableFile& out) {
    std::vector<std::byte> buf(static_cast<size_t>(std::min<uint64_t>(in->size(), 8u << 20)));
    for (uint64_t off = 0; off < in->size();) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), in->size() - off));
      in->read_exact(off, std::span(buf.data(), n));
      out.write_at(off, std::span<const std::byte>(buf.data(), n));
      off += n;
    }
  });
  return dest;
}

std::vector<std::string> shards_of_index(io::Env& env, const fs::path& index, const FileRef& ref) {
  const std::string text = io::read_small_file(env, index, kMaxIndexBytes);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Corrupt, "index " + ref.describe() + " is not valid JSON: " + e.what());
  }
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object()) {
    throw Error(ErrorCode::Corrupt, "index " + ref.describe() + " has no \"weight_map\" object");
  }
  std::set<std::string> shards;
  for (const auto& [tensor, file] : json["weight_map"].items()) {
    if (!file.is_string() || !is_valid_path_in_repo(file.get<std::string>())) {
      throw Error(ErrorCode::Corrupt, "index " + ref.describe() + " maps tensor '" + tensor +
                                          "' to an invalid shard name");
    }
    shards.insert(file.get<std::string>());
    if (shards.size() > kMaxShards) {
      throw Error(ErrorCode::Corrupt, "index " + ref.describe() + " names too many shards");
    }
  }
  return {shards.begin(), shards.end()};
}

// Fetches `paths` (all at one commit) with up to max_parallel_downloads threads; the first error
// stops the others from starting new files and is rethrown.
std::vector<Fetched> fetch_parallel(const Settings& settings, RepoCache& cache,
                                    const std::string& repo_id, const std::string& revision,
                                    const std::vector<std::string>& paths, Progress& progress) {
  std::vector<Fetched> results(paths.size());
  // A download thread the system refuses is an error (docs/hub.md), not a quieter slowdown.
  const auto n_threads = static_cast<unsigned>(
      std::min<size_t>(paths.size(), static_cast<size_t>(settings.max_parallel_downloads)));
  detail::parallel_for(paths.size(), n_threads, [&](size_t i) {
    results[i] = fetch_file(settings, cache, FileRef{repo_id, revision, paths[i]}, progress, false);
  }, {.what = "a download thread", .shortage = detail::ThreadShortage::Throw});
  return results;
}

}  // namespace

fs::path download_file(std::string_view repo_id, std::string_view path_in_repo,
                       const HubOptions& options) {
  require_repo_id(repo_id);
  require_path_in_repo(path_in_repo, "file");
  const Settings settings = resolve_settings(options);
  RepoCache cache(*settings.env, settings.cache_dir, repo_id);
  const FileRef ref{std::string(repo_id), effective_revision(options), std::string(path_in_repo)};
  Progress progress(settings.progress, std::string(path_in_repo));
  const Fetched f = fetch_file(settings, cache, ref, progress, false);
  progress.finish();
  if (!settings.local_dir.empty()) return copy_to_local_dir(settings, f.pointer, path_in_repo);
  return f.pointer;
}

fs::path download_model(std::string_view repo_id, std::string_view subfolder,
                        const HubOptions& options) {
  require_repo_id(repo_id);
  std::string prefix;
  if (!subfolder.empty()) {
    require_path_in_repo(subfolder, "subfolder");
    prefix = std::string(subfolder) + "/";
  }
  const Settings settings = resolve_settings(options);
  RepoCache cache(*settings.env, settings.cache_dir, repo_id);
  const std::string revision = effective_revision(options);
  Progress progress(settings.progress, std::string(repo_id));

  const FileRef index_ref{std::string(repo_id), revision, prefix + kIndexFile};
  const Fetched index = fetch_file(settings, cache, index_ref, progress, true);
  std::vector<std::string> files;
  std::string commit;
  if (!index.missing) {
    commit = index.commit;
    files.push_back(index_ref.path);
    std::vector<std::string> shards;
    for (const std::string& shard : shards_of_index(*settings.env, index.pointer, index_ref)) {
      shards.push_back(prefix + shard);
    }
    // Every shard from the index's commit, so that a push in between cannot mix versions.
    fetch_parallel(settings, cache, std::string(repo_id), commit, shards, progress);
    files.insert(files.end(), shards.begin(), shards.end());
  } else {
    const FileRef single_ref{std::string(repo_id), index.commit.empty() ? revision : index.commit,
                             prefix + kSingleFile};
    const Fetched single = fetch_file(settings, cache, single_ref, progress, true);
    if (single.missing) {
      throw Error(ErrorCode::NotFound,
                  std::string(settings.offline ? "offline mode: " : "") + std::string(repo_id) +
                      " at revision '" + revision + "' has neither " + prefix + kIndexFile + " nor " +
                      prefix + kSingleFile +
                      (settings.offline ? " in the cache at '" + settings.cache_dir.string() + "'" : ""));
    }
    commit = single.commit;
    files.push_back(single_ref.path);
  }
  progress.finish();
  if (!settings.local_dir.empty()) {
    for (const std::string& f : files) copy_to_local_dir(settings, cache.pointer_path(commit, f), f);
    return subfolder.empty() ? settings.local_dir : settings.local_dir / std::string(subfolder);
  }
  const fs::path snapshot = cache.snapshot_dir(commit);
  return subfolder.empty() ? snapshot : snapshot / std::string(subfolder);
}

std::optional<fs::path> resolve_hub_source(std::string_view spec, const HubOptions& options) {
  const std::optional<HubSpec> parsed = parse_hub_spec(spec);
  if (!parsed) return std::nullopt;
  HubOptions effective = options;
  if (effective.revision.empty()) effective.revision = parsed->revision;
  if (parsed->path.empty()) return download_model(parsed->repo_id, "", effective);
  const std::string_view last = std::string_view(parsed->path).substr(parsed->path.rfind('/') + 1);
  // A last component without an extension names a folder (diffusers-style "unet"), else a file.
  if (last.find('.') == std::string_view::npos) {
    return download_model(parsed->repo_id, parsed->path, effective);
  }
  return download_file(parsed->repo_id, parsed->path, effective);
}

}  // namespace ckptio::hub
