// Name validation for repo ids, paths in repos, revisions and etags.
#include "hub/names.h"

#include <cctype>

#include "ckptio/error.h"
#include "ckptio/hub.h"
#include "hub/url.h"

namespace ckptio::hub {
namespace {

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

bool is_hex_lower(std::string_view text, size_t n) {
  if (text.size() != n) return false;
  for (const char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool components_ok(std::string_view path) {
  if (path.empty()) return false;
  size_t start = 0;
  while (true) {
    const size_t slash = path.find('/', start);
    const std::string_view part =
        path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    for (const char c : part) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f || c == '\\') return false;
    }
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

}  // namespace

bool is_valid_repo_part(std::string_view part) {
  if (part.empty() || part.size() > 96) return false;
  if (!is_word_char(part.front()) || !is_word_char(part.back())) return false;
  if (part.find("--") != std::string_view::npos || part.find("..") != std::string_view::npos) {
    return false;
  }
  for (const char c : part) {
    if (!is_word_char(c) && c != '-' && c != '.') return false;
  }
  return true;
}

bool is_valid_path_in_repo(std::string_view path) { return components_ok(path); }

bool is_valid_revision(std::string_view revision) { return components_ok(revision); }

bool is_commit_hash(std::string_view text) { return is_hex_lower(text, 40); }

bool is_sha256_hex(std::string_view text) { return is_hex_lower(text, 64); }

std::string normalize_etag(std::string_view etag) {
  while (!etag.empty() && (etag.front() == ' ' || etag.front() == '\t')) etag.remove_prefix(1);
  while (!etag.empty() && (etag.back() == ' ' || etag.back() == '\t')) etag.remove_suffix(1);
  if (etag.starts_with("W/")) etag.remove_prefix(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return std::string(etag);
}

bool is_safe_etag(std::string_view etag) {
  if (etag.empty() || etag.size() > 128 || etag.front() == '.' || etag.back() == '.') return false;
  for (const char c : etag) {
    if (!is_word_char(c) && c != '-' && c != '.') return false;
  }
  return etag.find("..") == std::string_view::npos;
}

void require_path_in_repo(std::string_view path, std::string_view what) {
  if (!is_valid_path_in_repo(path)) {
    throw Error(ErrorCode::InvalidArgument,
                std::string(what) + " '" + std::string(path) +
                    "' is not a valid path inside a Hub repo (empty, absolute, '.' or '..' parts)");
  }
}

std::string repo_folder_name(std::string_view repo_id) {
  std::string out = "models--";
  for (const char c : repo_id) {
    if (c == '/') {
      out += "--";
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<HubSpec> parse_hub_spec(std::string_view spec) {
  if (spec.starts_with("hf://")) spec.remove_prefix(5);
  if (spec.empty() || spec.front() == '/' || spec.front() == '.' || spec.front() == '~') {
    return std::nullopt;
  }
  const size_t first_slash = spec.find('/');
  if (first_slash == std::string_view::npos) return std::nullopt;
  const std::string_view org = spec.substr(0, first_slash);
  std::string_view rest = spec.substr(first_slash + 1);
  // The name ends at "@" (a revision follows) or at the next "/" (a path follows).
  const size_t name_end = rest.find_first_of("@/");
  const std::string_view name = rest.substr(0, name_end);
  if (!is_valid_repo_part(org) || !is_valid_repo_part(name)) return std::nullopt;
  HubSpec out;
  out.repo_id = std::string(org) + "/" + std::string(name);
  rest = name_end == std::string_view::npos ? std::string_view{} : rest.substr(name_end);
  if (rest.starts_with("@")) {
    rest.remove_prefix(1);
    size_t rev_end = rest.find('/');
    // "refs/pr/N" is the one revision form with slashes that is common enough to spell bare.
    if (rest.starts_with("refs/pr/")) rev_end = rest.find('/', 8);
    const std::string_view raw_rev = rest.substr(0, rev_end);
    out.revision = percent_decode(raw_rev);
    if (!is_valid_revision(out.revision)) return std::nullopt;
    rest = rev_end == std::string_view::npos ? std::string_view{} : rest.substr(rev_end);
  }
  if (!rest.empty()) {
    rest.remove_prefix(1);  // the "/" before the path
    if (!is_valid_path_in_repo(rest)) return std::nullopt;
    out.path = std::string(rest);
  }
  return out;
}

bool looks_like_hub_spec(std::string_view spec) { return parse_hub_spec(spec).has_value(); }

}  // namespace ckptio::hub
