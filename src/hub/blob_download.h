// Downloads one blob into the cache: blobs/<etag>.<random>.incomplete, resumed with Range after a
// dropped connection, size- and (for LFS etags) SHA-256-checked, fsynced, then renamed to
// blobs/<etag>. A process killed mid-download leaves its .incomplete behind; the next download
// of an LFS blob that holds the blob's lock adopts it (atomic rename, so only one process can) and
// resumes it. A download that gave up waiting for the lock neither adopts nor leaves an adoptable
// partial: the lock holder's file may be live.
#pragma once

#include <cstdint>
#include <string>

#include "hub/http_client.h"
#include "hub/progress.h"
#include "hub/protocol.h"
#include "hub/repo_cache.h"
#include "hub/settings.h"

namespace ckptio::hub {

// Ensures blobs/<meta.etag> exists with the verified content. Throws Error(Mismatch) for a size or
// SHA-256 mismatch, Error(IoError) when the transfer keeps failing, and the mapped HTTP error for
// a refused GET.
void download_blob(HttpClient& http, const Settings& settings, RepoCache& cache,
                   const FileRef& ref, const FileMetadata& meta, Progress& progress);

}  // namespace ckptio::hub
