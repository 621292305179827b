// The Hugging Face Hub: resolve "org/name[@revision][/path]" to local files, downloading into the
// cache that huggingface_hub uses, so that either tool reuses what the other fetched.
//
// Cache layout (shared with huggingface_hub):
//   <cache>/models--org--name/blobs/<etag>                 file content, named by its etag
//   <cache>/models--org--name/snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag>
//   <cache>/models--org--name/refs/<revision>              the commit (40 hex, no newline)
//   <cache>/models--org--name/.no_exist/<commit>/<path>    marker: the file is not in that commit
//   <cache>/.locks/models--org--name/<etag>.lock           download lock
// A download goes to blobs/<etag>.<random>.incomplete and is renamed into place only once its size
// (and, for LFS files, its SHA-256) is checked: nothing partial is ever visible under a final name.
//
// Environment (read when a HubOptions field is left empty): HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE,
// HF_HOME, XDG_CACHE_HOME, HF_ENDPOINT, HF_TOKEN, HUGGING_FACE_HUB_TOKEN, HF_TOKEN_PATH,
// HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT,
// HF_HUB_DISABLE_PROGRESS_BARS.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/io.h"
#include "ckptio/load.h"

namespace ckptio::hub {

namespace fs = std::filesystem;

enum class ProgressMode : uint8_t {
  Auto,    // a bar on stderr when stderr is a terminal and HF_HUB_DISABLE_PROGRESS_BARS is not set
  Never,   // --quiet
  Always,  // even when stderr is not a terminal (tests)
};

struct HubOptions {
  // Branch, tag, commit or "refs/pr/N". Empty: the spec's "@revision", else "main".
  std::string revision;
  // Empty: HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE > $HF_HOME/hub > $XDG_CACHE_HOME/huggingface/hub >
  // ~/.cache/huggingface/hub.
  fs::path cache_dir;
  // Empty: HF_ENDPOINT, else https://huggingface.co.
  std::string endpoint;
  // Empty: HF_TOKEN > HUGGING_FACE_HUB_TOKEN > the token file ($HF_TOKEN_PATH or $HF_HOME/token).
  std::optional<std::string> token;
  // Cache only, no network (also on when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is true).
  bool offline = false;
  // When set, the resolved files are also copied (atomically) to <local_dir>/<path in repo> and
  // those paths are returned; the cache stays the source of truth.
  fs::path local_dir;
  ProgressMode progress = ProgressMode::Auto;
  // Files of a sharded repo downloaded at once.
  int max_parallel_downloads = 8;
  // Attempts per request for 5xx, 429, timeouts and dropped connections, with exponential backoff
  // starting at retry_base_delay. A dropped download resumes with Range, so its retries do not
  // start over.
  int max_attempts = 5;
  std::chrono::milliseconds retry_base_delay{500};
  // Metadata (HEAD) timeout; 0 means HF_HUB_ETAG_TIMEOUT or 10 s.
  std::chrono::milliseconds metadata_timeout{0};
  // A download that receives nothing for this long is treated as dropped; 0 means
  // HF_HUB_DOWNLOAD_TIMEOUT or 10 s.
  std::chrono::milliseconds stall_timeout{0};
  // How long to wait for another process (or thread) that is downloading the same file before
  // downloading it too. Only the holder of the cache's lock for a file resumes a partial download
  // left by an earlier process, so a download that stops waiting never takes over a live one.
  std::chrono::milliseconds lock_wait{std::chrono::minutes(5)};
  // File access (null: io::Env::posix()).
  io::Env* env = nullptr;
};

// A parsed source: "org/name", "org/name/path/in/repo.safetensors", with an optional "@revision"
// after the name ("org/name@v1.0/model.safetensors", "org/name@refs/pr/3"; any other revision
// with "/" is written with %2F, as in huggingface_hub's hf:// paths). A leading "hf://" is allowed.
struct HubSpec {
  std::string repo_id;   // "org/name"
  std::string revision;  // empty when the spec names none
  std::string path;      // path in the repo; empty for the whole model
};

// Parses a spec; nullopt when it is not one (absolute or ./ paths, a single component, characters
// a Hub repo id cannot hold, "..", empty components).
std::optional<HubSpec> parse_hub_spec(std::string_view spec);

// True when `spec` parses as a HubSpec. Says nothing about whether the repo exists.
bool looks_like_hub_spec(std::string_view spec);

// The cache root after applying options and the environment (see HubOptions::cache_dir).
fs::path resolve_cache_dir(const HubOptions& options);

// "models--org--name".
std::string repo_folder_name(std::string_view repo_id);

// <cache>/models--org--name: every snapshot symlink of the repo resolves inside this folder, so
// readers that confine symlinks use it as their allowed root.
fs::path repo_cache_dir(std::string_view repo_id, const HubOptions& options = {});

// One file of a repo: returns snapshots/<commit>/<path> in the cache (or the local_dir copy).
// Online: a HEAD for the metadata, then a verified download if the blob is not cached. Offline,
// or when the network fails (connection error, timeout, 5xx, 401/403) and the cache can answer:
// the cached snapshot file. Throws Error(NotFound) naming the repo, revision and file when neither
// the Hub nor the cache has it; Error(Mismatch) for a size or SHA-256 mismatch; Error(IoError)
// for network failures with no cached answer and for gated repos.
fs::path download_file(std::string_view repo_id, std::string_view path_in_repo,
                       const HubOptions& options = {});

// The whole model (optionally below `subfolder`): model.safetensors.index.json and every shard
// it names (downloaded in parallel), else model.safetensors. Returns the snapshot folder that
// holds them (or local_dir).
fs::path download_model(std::string_view repo_id, std::string_view subfolder,
                        const HubOptions& options = {});

// The result of a spec: a file for "org/name/file.ext", a folder for "org/name" (or a subfolder
// whose last component has no extension). nullopt when `spec` does not look like a Hub spec;
// otherwise downloads as needed and throws like download_file. options.revision wins over the
// spec's "@revision".
std::optional<fs::path> resolve_hub_source(std::string_view spec, const HubOptions& options = {});

// What load_checkpoint, CheckpointReader::open, convert_checkpoint and diff_checkpoints use for
// "hf://org/name[@revision][/path]" sources when it is set as SourceOptions::hub (they never
// reach the network otherwise):
//   ckptio::LoadOptions o;
//   o.source.hub = ckptio::hub::resolver();
//   auto ck = ckptio::load_checkpoint("hf://org/name", o);
// The spec resolves like resolve_hub_source (cache, endpoint, token and offline mode from
// `options`, then the environment), and symlinked shards may resolve inside the repo's cache
// folder. `options.env` empty: the loader's Env.
HubResolver resolver(const HubOptions& options = {});

}  // namespace ckptio::hub
