// Fuzzes Hub spec parsing: whatever a user types, an accepted spec must never name a path that
// could leave the cache's repo folder (no "..", ".", empty or absolute parts, valid repo id).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ckptio/hub.h"
#include "hub/names.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto spec = ckptio::hub::parse_hub_spec(text);
  check(spec.has_value() == ckptio::hub::looks_like_hub_spec(text));
  if (!spec) return 0;
  const size_t slash = spec->repo_id.find('/');
  check(slash != std::string::npos && spec->repo_id.find('/', slash + 1) == std::string::npos);
  check(ckptio::hub::is_valid_repo_part(std::string_view(spec->repo_id).substr(0, slash)));
  check(ckptio::hub::is_valid_repo_part(std::string_view(spec->repo_id).substr(slash + 1)));
  check(spec->path.empty() || ckptio::hub::is_valid_path_in_repo(spec->path));
  check(spec->revision.empty() || ckptio::hub::is_valid_revision(spec->revision));
  for (const std::string* s : {&spec->path, &spec->revision}) {
    check(s->find("..") == std::string::npos || s->find("/../") == std::string::npos);
    check(!s->starts_with("/") && !s->ends_with("/") && s->find("//") == std::string::npos);
    check(*s != ".." && !s->starts_with("../") && !s->ends_with("/.."));
  }
  return 0;
}
