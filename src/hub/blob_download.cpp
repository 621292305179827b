// The blob download loop: GET with manual redirects, Range resume, restart when the server ignores
// the range, verification, and the atomic rename into place.
#include "hub/blob_download.h"

#include <charconv>
#include <chrono>
#include <memory>
#include <string_view>
#include <vector>

#include "ckptio/error.h"
#include "hub/file_lock.h"
#include "hub/names.h"
#include "hub/sha256.h"
#include "hub/url.h"

namespace ckptio::hub {
namespace {

constexpr int kMaxRedirects = 10;

// "bytes <first>-<last>/<total>" -> first and total (total may be "*").
bool parse_content_range(const std::string& value, uint64_t& first, std::optional<uint64_t>& total) {
  std::string_view v(value);
  if (!v.starts_with("bytes ")) return false;
  v.remove_prefix(6);
  const size_t dash = v.find('-');
  const size_t slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) return false;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + dash, first);
  if (ec != std::errc() || p != v.data() + dash) return false;
  const std::string_view t = v.substr(slash + 1);
  if (t == "*") return true;
  uint64_t tv = 0;
  const auto [q, ec2] = std::from_chars(t.data(), t.data() + t.size(), tv);
  if (ec2 != std::errc() || q != t.data() + t.size()) return false;
  total = tv;
  return true;
}

// The partially downloaded file and the running hash of its bytes.
struct Partial {
  fs::path path;
  std::unique_ptr<io::WritableFile> file;
  Sha256 hash;
  uint64_t size = 0;
  bool adopted = false;  // resumed from a leftover of an earlier process

  void restart(Progress& progress) {
    file->truncate(0);
    hash.reset();
    progress.retreat(size);
    size = 0;
  }
};

class PartialSink final : public BodySink {
 public:
  PartialSink(Partial& partial, uint64_t expected, uint64_t requested_from, Progress& progress,
              const FileRef& ref)
      : partial_(partial), expected_(expected), requested_from_(requested_from),
        progress_(progress), ref_(ref) {}

  bool restart_needed() const { return restart_needed_; }

  bool begin(const HttpResponse& r) override {
    if (r.status == 206) {
      uint64_t first = 0;
      std::optional<uint64_t> total;
      if (!parse_content_range(r.header("content-range"), first, total) || first != requested_from_) {
        // Not the range we asked for: start over rather than splice wrong bytes.
        restart_needed_ = true;
        return false;
      }
      if (total && *total != expected_) throw size_mismatch(*total);
      return true;
    }
    if (r.status == 200) {
      // The server ignored Range (or we sent none): the body is the whole file.
      if (partial_.size > 0) partial_.restart(progress_);
      uint64_t length = 0;
      const std::string cl = r.header("content-length");
      if (!cl.empty() && std::from_chars(cl.data(), cl.data() + cl.size(), length).ec == std::errc() &&
          length != expected_) {
        throw size_mismatch(length);
      }
      return true;
    }
    return false;
  }

  bool write(std::span<const std::byte> data) override {
    if (partial_.size + data.size() > expected_) {
      throw Error(ErrorCode::Mismatch, "the server sent more than the " + std::to_string(expected_) +
                                           " bytes announced for " + ref_.describe());
    }
    partial_.file->write_at(partial_.size, data);
    partial_.hash.update(data);
    partial_.size += data.size();
    progress_.advance(data.size());
    return true;
  }

 private:
  Error size_mismatch(uint64_t got) const {
    return Error(ErrorCode::Mismatch, "the server announced " + std::to_string(got) +
                                          " bytes for " + ref_.describe() + " but the metadata said " +
                                          std::to_string(expected_));
  }

  Partial& partial_;
  uint64_t expected_;
  uint64_t requested_from_;
  Progress& progress_;
  const FileRef& ref_;
  bool restart_needed_ = false;
};

// Partial files: "<etag>.<random>.incomplete" for a download that holds the lock (adoptable once
// its process is gone: only the next lock holder looks at it, and the lock says the writer is gone
// or has given up), "<etag>.<random>.unlocked.incomplete" for one that stopped waiting for the
// lock: it may be live whoever holds the lock, so it is never adopted (and never kept on failure).
constexpr std::string_view kIncomplete = ".incomplete";
constexpr std::string_view kUnlocked = ".unlocked";

bool adoptable(std::string_view name, const std::string& etag) {
  if (!name.starts_with(etag + ".") || !name.ends_with(kIncomplete)) return false;
  const std::string_view token = name.substr(etag.size() + 1, name.size() - etag.size() - 1 - kIncomplete.size());
  return !token.empty() && token.find('.') == std::string_view::npos;
}

// Takes over a leftover "<etag>.<random>.incomplete" by renaming it to our own name. Only called
// while holding the blob's lock: the holder of a leftover either died or released the lock.
// Rename is atomic, so even where flock does nothing only one process gets it.
bool adopt_leftover(io::Env& env, const fs::path& blobs, const std::string& etag, const fs::path& mine) {
  for (const std::string& name : env.list_dir(blobs)) {
    if (!adoptable(name, etag) || blobs / name == mine) continue;
    try {
      env.rename(blobs / name, mine);
      return true;
    } catch (const Error&) {
      // Someone else took it first.
    }
  }
  return false;
}

void hash_existing(io::Env& env, Partial& partial) {
  auto in = env.open_read(partial.path);
  partial.size = in->size();
  std::vector<std::byte> buf(std::min<uint64_t>(partial.size, 8u << 20));
  for (uint64_t off = 0; off < partial.size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), partial.size - off));
    in->read_exact(off, std::span(buf.data(), n));
    partial.hash.update(std::span(buf.data(), n));
    off += n;
  }
}

// Runs the GET loop until the partial holds `meta.size` bytes. Throws when attempts run out.
void transfer(HttpClient& http, const Settings& settings, const FileRef& ref,
              const FileMetadata& meta, Partial& partial, Progress& progress) {
  const HttpTimeouts timeouts{settings.metadata_timeout, {}, settings.stall_timeout};
  int failures = 0;       // consecutive failed attempts that brought no new bytes
  int total_attempts = 0; // hard bound, even when every attempt brings a few bytes
  std::string last_error;
  while (partial.size < meta.size) {
    if (failures >= settings.max_attempts || total_attempts >= settings.max_attempts * 20) {
      throw Error(ErrorCode::IoError, "download of " + ref.describe() + " failed after " +
                                          std::to_string(total_attempts) + " attempts (" +
                                          std::to_string(partial.size) + " of " +
                                          std::to_string(meta.size) + " bytes): " + last_error);
    }
    ++total_attempts;
    const uint64_t before = partial.size;
    std::string url = meta.location;
    HttpOutcome out;
    bool restart = false;
    for (int hop = 0;; ++hop) {
      std::vector<std::string> headers = auth_headers(settings, url);
      if (partial.size > 0) headers.push_back("Range: bytes=" + std::to_string(partial.size) + "-");
      PartialSink sink(partial, meta.size, partial.size, progress, ref);
      out = http.get(url, headers, timeouts, sink);
      restart = sink.restart_needed();
      const long s = out.response.status;
      if (out.transport == Transport::Ok && s >= 300 && s < 400 && !out.response.redirect_url.empty()) {
        if (hop >= kMaxRedirects) throw Error(ErrorCode::IoError, "too many redirects for " + ref.describe());
        url = out.response.redirect_url;
        continue;
      }
      break;
    }
    const long status = out.response.status;
    if (restart || status == 416) {
      partial.restart(progress);
      last_error = "the server answered a different range than requested";
      ++failures;
      continue;
    }
    if (out.transport == Transport::Ok && (status == 200 || status == 206)) {
      if (partial.size < meta.size) {
        last_error = "the body ended after " + std::to_string(partial.size) + " bytes";
      }
    } else if (out.transport != Transport::Ok) {
      last_error = out.error;
    } else if (is_retryable_status(status)) {
      last_error = "HTTP " + std::to_string(status);
    } else {
      throw http_error(out.response, ref, url);
    }
    if (partial.size >= meta.size) break;
    failures = partial.size > before ? 1 : failures + 1;
    backoff_sleep(settings, failures);
  }
}

}  // namespace

void download_blob(HttpClient& http, const Settings& settings, RepoCache& cache,
                   const FileRef& ref, const FileMetadata& meta, Progress& progress) {
  io::Env& env = *settings.env;
  const fs::path blob = cache.blob_path(meta.etag);
  const auto blob_exists = [&] { return env.stat(blob).exists; };
  if (blob_exists()) return;
  io::create_dirs_synced(env, cache.blobs_dir());  // the blob must outlive a power cut
  // Waiting past lock_wait means something is stuck in the other download; we then download
  // ourselves (still correct, only duplicate work) and leave its partial file alone.
  const FileLock lock(env, cache.lock_path(meta.etag), settings.lock_wait, blob_exists);
  if (blob_exists()) return;  // another process finished it while we waited

  const bool lfs = is_sha256_hex(meta.etag);
  progress.add_total(meta.size);
  for (int round = 0;; ++round) {
    Partial partial;
    partial.path = cache.blobs_dir() / (meta.etag + "." + io::random_suffix().substr(0, 8) +
                                        (lock.held() ? "" : std::string(kUnlocked)) +
                                        std::string(kIncomplete));
    // Only LFS blobs are adopted: their SHA-256 proves the spliced result right.
    partial.adopted = round == 0 && lfs && lock.held() &&
                      adopt_leftover(env, cache.blobs_dir(), meta.etag, partial.path);
    bool keep_partial = false;
    try {
      if (partial.adopted) {
        hash_existing(env, partial);
        if (partial.size > meta.size) {  // longer than the file: useless, start over
          partial.hash.reset();
          partial.size = 0;
        }
        partial.file = env.open_write(partial.path, io::OpenMode::Existing);
        if (partial.size == 0) partial.file->truncate(0);
        progress.advance(partial.size);
      } else {
        partial.file = env.open_write(partial.path, io::OpenMode::CreateNew);
      }
      try {
        transfer(http, settings, ref, meta, partial, progress);
      } catch (const Error& e) {
        // A network failure keeps a resumable LFS partial for the next attempt.
        keep_partial = lfs && lock.held() && e.code() == ErrorCode::IoError && partial.size > 0;
        throw;
      }
      if (partial.size != meta.size) {
        throw Error(ErrorCode::Mismatch, "consistency check failed for " + ref.describe() +
                                             ": expected " + std::to_string(meta.size) +
                                             " bytes, got " + std::to_string(partial.size));
      }
      if (lfs) {
        const std::string digest = partial.hash.hex_digest();
        if (digest != meta.etag) {
          if (partial.adopted) {
            // The leftover held bad bytes; one fresh download decides.
            partial.file.reset();
            env.remove(partial.path);
            progress.retreat(partial.size);
            continue;
          }
          throw Error(ErrorCode::Mismatch, "SHA-256 of the downloaded " + ref.describe() + " is " +
                                               digest + " but the Hub says " + meta.etag +
                                               "; the download was discarded");
        }
      }
      partial.file->sync();
      partial.file->close();
      partial.file.reset();
      env.rename(partial.path, blob);
      env.sync_dir(cache.blobs_dir());
      return;
    } catch (...) {
      partial.file.reset();
      if (!keep_partial) {
        try {
          env.remove(partial.path);
        } catch (...) {
          // The original failure matters more; a leftover .incomplete is only ever adopted after
          // verification or ignored.
        }
      }
      throw;
    }
  }
}

}  // namespace ckptio::hub
