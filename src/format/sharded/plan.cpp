// Shard sizes, names, the greedy split and the index text.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>
#include <unordered_set>

#include "ckptio/error.h"
#include "ckptio/sharded.h"

namespace ckptio {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void check_base_name(std::string_view base) {
  if (base.empty() || base.front() == '.' || base.find('/') != std::string_view::npos ||
      base.find('\\') != std::string_view::npos || base.find('\0') != std::string_view::npos) {
    throw Error(ErrorCode::InvalidArgument,
                "invalid shard base name '" + std::string(base) +
                    "' (must be non-empty, without '/', and not start with '.')");
  }
}

}  // namespace

uint64_t parse_size(std::string_view text) {
  const auto fail = [&](std::string_view why) -> Error {
    return Error(ErrorCode::InvalidArgument, "invalid size '" + std::string(text) + "': " +
                                                 std::string(why) +
                                                 " (expected e.g. 5GB, 500MB, 2GiB or 1000000)");
  };
  std::string_view s = text;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  size_t digits = 0;
  while (digits < s.size() && (std::isdigit(static_cast<unsigned char>(s[digits])) || s[digits] == '.')) {
    ++digits;
  }
  const std::string number(s.substr(0, digits));
  std::string_view unit = s.substr(digits);
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.front()))) unit.remove_prefix(1);
  if (number.empty() || number == "." || std::count(number.begin(), number.end(), '.') > 1) {
    throw fail("no number");
  }
  static const std::pair<const char*, long double> kUnits[] = {
      {"", 1},           {"b", 1},          {"kb", 1e3L},         {"mb", 1e6L},
      {"gb", 1e9L},      {"tb", 1e12L},     {"kib", 1024.0L},     {"mib", 1048576.0L},
      {"gib", 1073741824.0L}, {"tib", 1099511627776.0L}};
  const std::string u = lower(unit);
  long double multiplier = -1;
  for (const auto& [name, m] : kUnits) {
    if (u == name) multiplier = m;
  }
  if (multiplier < 0) throw fail("unknown unit '" + std::string(unit) + "'");
  if (u.empty() && number.find('.') != std::string::npos) throw fail("a byte count must be whole");
  const long double value = std::strtold(number.c_str(), nullptr) * multiplier;
  if (!(value >= 1.0L)) throw fail("must be at least one byte");
  if (value >= 9223372036854775808.0L) throw fail("too large");
  return static_cast<uint64_t>(value);  // int() in huggingface_hub truncates too
}

std::string shard_file_name(std::string_view base_name, size_t index, size_t count) {
  if (count > 99999 || index >= count) {
    throw Error(ErrorCode::InvalidArgument,
                "shard " + std::to_string(index + 1) + " of " + std::to_string(count) +
                    " cannot be named with five digits");
  }
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu", index + 1, count);
  return std::string(base_name) + suffix + ".safetensors";
}

std::string single_file_name(std::string_view base_name) {
  return std::string(base_name) + ".safetensors";
}

std::string index_file_name(std::string_view base_name) {
  return std::string(base_name) + ".safetensors.index.json";
}

ShardPlan plan_shards(std::span<const NamedTensor> tensors, uint64_t max_shard_size,
                      std::string_view base_name) {
  check_base_name(base_name);
  if (max_shard_size == 0) {
    throw Error(ErrorCode::InvalidArgument, "max_shard_size must be at least one byte");
  }
  ShardPlan plan;
  std::unordered_set<std::string_view> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (!seen.insert(t.name).second) {
      throw Error(ErrorCode::InvalidArgument, "duplicate tensor name '" + t.name + "'");
    }
    const uint64_t size = t.view.bytes.size();
    if (plan.shards.empty() || (!plan.shards.back().members.empty() &&
                                plan.shards.back().data_bytes + size > max_shard_size)) {
      plan.shards.emplace_back();
    }
    plan.shards.back().members.push_back(i);
    plan.shards.back().data_bytes += size;
    plan.total_size += size;
  }
  const size_t n = plan.shards.size();
  for (size_t i = 0; i < n; ++i) {
    plan.shards[i].file_name = n == 1 ? single_file_name(base_name) : shard_file_name(base_name, i, n);
  }
  return plan;
}

std::string render_shard_index(const ShardPlan& plan, std::span<const NamedTensor> tensors,
                               const Metadata& extra_metadata) {
  nlohmann::json metadata = nlohmann::json::object();
  for (const auto& [k, v] : extra_metadata) {
    if (k == "total_size") {
      throw Error(ErrorCode::InvalidArgument,
                  "index metadata key 'total_size' is reserved (ckptio writes it)");
    }
    metadata[k] = v;
  }
  metadata["total_size"] = plan.total_size;
  nlohmann::json weight_map = nlohmann::json::object();
  for (const auto& shard : plan.shards) {
    for (size_t m : shard.members) weight_map[tensors[m].name] = shard.file_name;
  }
  nlohmann::json index = {{"metadata", std::move(metadata)}, {"weight_map", std::move(weight_map)}};
  // ensure_ascii like Python's json.dumps, so the bytes match what transformers writes.
  return index.dump(2, ' ', true) + "\n";
}

}  // namespace ckptio
