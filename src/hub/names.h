// Rules for the names that come from users and from the server before they become cache paths:
// a hostile server or index must not be able to write outside the repo folder.
#pragma once

#include <string>
#include <string_view>

namespace ckptio::hub {

// One part of a repo id ("org" or "name"): letters, digits, "_.-", starting and ending with a
// letter, digit or "_", no "--" or "..", at most 96 characters (huggingface_hub's
// validate_repo_id rules).
bool is_valid_repo_part(std::string_view part);

// A relative path inside a repo: non-empty "/"-separated components, none "." or "..", no "\\",
// no NUL or control characters.
bool is_valid_path_in_repo(std::string_view path);

// A revision usable as refs/<revision>: components as above (branch names may hold "/").
bool is_valid_revision(std::string_view revision);

// 40 lower-case hex digits.
bool is_commit_hash(std::string_view text);

// 64 lower-case hex digits (an LFS etag is the file's SHA-256).
bool is_sha256_hex(std::string_view text);

// Strips a leading "W/" and surrounding quotes from an ETag header value.
std::string normalize_etag(std::string_view etag);

// An etag usable as a blob file name: [A-Za-z0-9_-] plus inner ".", at most 128 characters.
bool is_safe_etag(std::string_view etag);

// Throws Error(InvalidArgument) naming `what` when the check fails.
void require_path_in_repo(std::string_view path, std::string_view what);

}  // namespace ckptio::hub
