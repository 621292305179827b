// The resolve protocol's metadata call and its error mapping (huggingface_hub's
// get_hf_file_metadata and hf_raise_for_status): HEAD {endpoint}/{repo}/resolve/{rev}/{path},
// relative redirects followed (renamed repos), the first absolute redirect (the LFS CDN) kept as
// the download location.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptio/error.h"
#include "hub/http_client.h"
#include "hub/settings.h"

namespace ckptio::hub {

// What a request is about, for URLs and messages.
struct FileRef {
  std::string repo_id;
  std::string revision;
  std::string path;
  std::string describe() const;  // "'path' in org/name at revision 'rev'"
};

struct FileMetadata {
  std::string commit;    // X-Repo-Commit, 40 hex
  std::string etag;      // normalised X-Linked-Etag or ETag
  uint64_t size = 0;     // X-Linked-Size or Content-Length
  std::string location;  // where to GET the bytes
};

struct MetadataResult {
  std::optional<FileMetadata> metadata;
  std::optional<Error> error;
  // The Hub answered EntryNotFound; `missing_commit` is its X-Repo-Commit when it sent one.
  bool entry_missing = false;
  std::string missing_commit;
  // A failure huggingface_hub answers from the cache: no connection, timeout, 5xx, 401, 403.
  bool cache_may_answer = false;
};

std::string resolve_url(const Settings& settings, const FileRef& ref);

// "Authorization: Bearer <token>" when `url` is on the endpoint's origin and a token is known.
std::vector<std::string> auth_headers(const Settings& settings, const std::string& url);

// Maps a failed response to an Error: X-Error-Code (RepoNotFound, RevisionNotFound,
// EntryNotFound, GatedRepo) first, then the status.
Error http_error(const HttpResponse& response, const FileRef& ref, const std::string& url);

// 5xx and 429: worth another attempt.
bool is_retryable_status(long status);

// Sleeps before attempt `attempt` (1-based count of failures so far): base * 2^(attempt-1),
// capped at 10 s.
void backoff_sleep(const Settings& settings, int attempt);

MetadataResult fetch_metadata(HttpClient& http, const Settings& settings, const FileRef& ref);

}  // namespace ckptio::hub
