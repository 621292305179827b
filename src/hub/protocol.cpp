// HEAD with retries, relative-redirect following, header validation and X-Error-Code mapping.
#include "hub/protocol.h"

#include <algorithm>
#include <charconv>
#include <thread>

#include "hub/names.h"
#include "hub/url.h"

namespace ckptio::hub {
namespace {

constexpr int kMaxRedirects = 10;

std::optional<uint64_t> parse_u64(const std::string& text) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return v;
}

std::string server_message(const HttpResponse& response) {
  std::string m = response.header("x-error-message");
  if (m.empty() && !response.body.empty()) m = response.body.substr(0, 300);
  while (!m.empty() && (m.back() == '\n' || m.back() == '\r')) m.pop_back();
  return m.empty() ? "" : " (server says: " + m + ")";
}

}  // namespace

std::string FileRef::describe() const {
  return "'" + path + "' in " + repo_id + " at revision '" + revision + "'";
}

std::string resolve_url(const Settings& settings, const FileRef& ref) {
  return settings.endpoint + "/" + ref.repo_id + "/resolve/" + percent_encode(ref.revision, false) +
         "/" + percent_encode(ref.path, true);
}

std::vector<std::string> auth_headers(const Settings& settings, const std::string& url) {
  std::vector<std::string> headers;
  // A different origin is a CDN with a signed URL: the token stays home.
  if (settings.token && url_origin(url) == url_origin(settings.endpoint)) {
    headers.push_back("Authorization: Bearer " + *settings.token);
  }
  return headers;
}

Error http_error(const HttpResponse& response, const FileRef& ref, const std::string& url) {
  const std::string code = response.header("x-error-code");
  const std::string said = server_message(response);
  if (code == "RepoNotFound" || (code.empty() && response.status == 401)) {
    return Error(ErrorCode::NotFound,
                 "repository " + ref.repo_id + " not found at " + url_origin(url) +
                     " (if it is private or gated, set HF_TOKEN to a token that can read it)" + said);
  }
  if (code == "RevisionNotFound") {
    return Error(ErrorCode::NotFound,
                 "revision '" + ref.revision + "' not found in repository " + ref.repo_id + said);
  }
  if (code == "EntryNotFound") {
    return Error(ErrorCode::NotFound, "file " + ref.describe() + " does not exist" + said);
  }
  if (code == "GatedRepo") {
    return Error(ErrorCode::IoError,
                 "repository " + ref.repo_id + " is gated: accept its conditions on the Hub and set "
                 "HF_TOKEN to a token of an account that has access" + said);
  }
  if (response.status == 404) {
    return Error(ErrorCode::NotFound, "HTTP 404 for " + ref.describe() + " (" + url + ")" + said);
  }
  return Error(ErrorCode::IoError, "HTTP " + std::to_string(response.status) + " for " +
                                       ref.describe() + " (" + url + ")" + said);
}

bool is_retryable_status(long status) { return status >= 500 || status == 429; }

void backoff_sleep(const Settings& settings, int attempt) {
  auto delay = settings.retry_base_delay;
  for (int i = 1; i < attempt && delay < std::chrono::seconds(10); ++i) delay *= 2;
  std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(delay, std::chrono::seconds(10)));
}

MetadataResult fetch_metadata(HttpClient& http, const Settings& settings, const FileRef& ref) {
  MetadataResult result;
  std::string url = resolve_url(settings, ref);
  const HttpTimeouts timeouts{settings.metadata_timeout, settings.metadata_timeout, {}};
  int failures = 0;
  int redirects = 0;
  while (true) {
    std::vector<std::string> headers = auth_headers(settings, url);
    // No compression: Content-Length must be the real size of the file.
    headers.push_back("Accept-Encoding: identity");
    HttpOutcome out = http.head(url, headers, timeouts);
    const HttpResponse& r = out.response;
    const bool transient = out.transport == Transport::Timeout ||
                           out.transport == Transport::Dropped ||
                           (out.transport == Transport::Ok && is_retryable_status(r.status));
    if (transient && ++failures < settings.max_attempts) {
      backoff_sleep(settings, failures);
      continue;
    }
    if (out.transport != Transport::Ok) {
      result.error = Error(ErrorCode::IoError, "cannot reach " + url_origin(url) + " for " +
                                                   ref.describe() + ": " + out.error);
      result.cache_may_answer = true;
      return result;
    }
    if (r.status >= 300 && r.status < 400 && is_relative_location(r.header("location")) &&
        !r.redirect_url.empty()) {
      // A renamed repo answers with a relative redirect to its new name.
      if (++redirects > kMaxRedirects) {
        result.error = Error(ErrorCode::IoError, "too many redirects for " + ref.describe());
        return result;
      }
      url = r.redirect_url;
      continue;
    }
    if (r.status >= 400) {
      result.error = http_error(r, ref, url);
      if (r.header("x-error-code") == "EntryNotFound") {
        result.entry_missing = true;
        const std::string commit = r.header("x-repo-commit");
        if (is_commit_hash(commit)) result.missing_commit = commit;
      }
      result.cache_may_answer = is_retryable_status(r.status) || r.status == 401 || r.status == 403;
      return result;
    }
    FileMetadata meta;
    meta.commit = r.header("x-repo-commit");
    meta.etag = normalize_etag(!r.header("x-linked-etag").empty() ? r.header("x-linked-etag")
                                                                  : r.header("etag"));
    const bool redirect = r.status >= 300 && r.status < 400;
    std::optional<uint64_t> size = parse_u64(r.header("x-linked-size"));
    if (!size && !redirect) size = parse_u64(r.header("content-length"));
    meta.location = redirect && !r.redirect_url.empty() ? r.redirect_url : url;
    if (!is_commit_hash(meta.commit)) {
      result.error = Error(ErrorCode::IoError,
                           "the server at " + url_origin(url) + " sent no valid X-Repo-Commit for " +
                               ref.describe() + ": it does not look like a Hugging Face Hub (a proxy "
                               "in the way? check HF_ENDPOINT)");
      result.cache_may_answer = true;
      return result;
    }
    if (!is_safe_etag(meta.etag)) {
      result.error = Error(ErrorCode::IoError, "the server sent no usable ETag for " + ref.describe() +
                                                   " ('" + meta.etag.substr(0, 80) +
                                                   "'), so the download could not be verified");
      return result;
    }
    if (!size) {
      result.error = Error(ErrorCode::IoError,
                           "the server sent no X-Linked-Size or Content-Length for " + ref.describe());
      return result;
    }
    meta.size = *size;
    result.metadata = std::move(meta);
    return result;
  }
}

}  // namespace ckptio::hub
