#include "format/sharded/stale_files.h"

#include <cctype>
#include <string>

#include "ckptio/io.h"

namespace ckptio::detail {
namespace {

bool five_digits(std::string_view s, size_t at) {
  if (at + 5 > s.size()) return false;
  for (size_t i = at; i < at + 5; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

// Matches "(-DDDDD(-of-DDDDD)?)?" at the start of `rest` and returns what follows; npos if the
// numbered part is malformed.
size_t skip_shard_number(std::string_view rest) {
  if (rest.empty() || rest.front() != '-') return 0;
  if (!five_digits(rest, 1)) return std::string_view::npos;
  size_t at = 6;
  if (rest.substr(at, 4) == "-of-") {
    if (!five_digits(rest, at + 4)) return std::string_view::npos;
    at += 9;
  }
  return at;
}

}  // namespace

bool is_shard_like_name(std::string_view name, std::string_view base, std::string_view suffix) {
  if (name.substr(0, base.size()) != base) return false;
  const std::string_view rest = name.substr(base.size());
  const size_t at = skip_shard_number(rest);
  if (at == std::string_view::npos) return false;
  return rest.substr(at) == suffix;
}

bool is_shard_family_name(std::string_view name, std::string_view base) {
  if (name == std::string(base) + ".safetensors.index.json") return true;
  return is_shard_like_name(name, base, ".safetensors");
}

bool is_shard_family_temp_name(std::string_view name, std::string_view base) {
  if (!io::is_temp_name(name)) return false;
  const std::string_view inner = name.substr(1, name.find(".tmp-") - 1);
  return is_shard_family_name(inner, base);
}

}  // namespace ckptio::detail
