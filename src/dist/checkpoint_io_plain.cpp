// Flattening, merging and rebuilding the plain values of a distributed training checkpoint.
#include "dist/checkpoint_io_plain.h"

#include "ckptio/error.h"

namespace ckptio::dist::detail {

using nlohmann::json;

namespace {

void walk(const std::string& prefix, const json& object, Leaves& out) {
  for (const auto& [key, value] : object.items()) {
    if (key.empty() || key.find('.') != std::string::npos) {
      throw Error(ErrorCode::InvalidArgument,
                  "'" + prefix + "': key \"" + key +
                      "\" is empty or holds '.', which a dotted key cannot split back into");
    }
    const std::string dotted = prefix + "." + key;
    if (value.is_object() && !value.empty()) {
      walk(dotted, value, out);
    } else {
      out[dotted] = value;
    }
  }
}

}  // namespace

void flatten_values(std::string_view prefix, std::string_view text, Leaves& out) {
  const std::string p(prefix);
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, "'" + p + "' values are not JSON: " + e.what());
  }
  if (!parsed.is_object()) {
    throw Error(ErrorCode::InvalidArgument,
                "'" + p + "' values must be a JSON object, not " + parsed.type_name());
  }
  if (parsed.empty()) {
    out[p] = json::object();
    return;
  }
  walk(p, parsed, out);
}

void flatten_running(const RunningStates& running, std::string_view extra_json, Leaves& out) {
  json extra;
  try {
    extra = json::parse(extra_json);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, std::string("extra is not JSON: ") + e.what());
  }
  out["running_states.epoch"] = running.epoch;
  out["running_states.step"] = running.step;
  out["running_states.global_step"] = running.global_step;
  out["running_states.batch_size"] = running.batch_size;
  out["running_states.actual_update_step"] = running.actual_update_step;
  // In a list, as Python writes it: one JSON value however it is shaped.
  out["running_states.extra"] = json::array({extra});
}

std::string merge_plain(const std::vector<std::string>& rank_leaves) {
  std::vector<json> ranks;
  ranks.reserve(rank_leaves.size());
  for (const std::string& text : rank_leaves) ranks.push_back(json::parse(text));
  std::map<std::string, bool> keys;
  for (const json& r : ranks) {
    for (const auto& [k, v] : r.items()) keys[k] = true;
  }
  json values = json::object();
  json per_rank = json::object();
  for (const auto& [key, unused] : keys) {
    (void)unused;
    bool same = true;
    for (const json& r : ranks) {
      if (!r.contains(key) || r.at(key).dump() != ranks.front().at(key).dump()) same = false;
      if (!same) break;
    }
    if (same) {
      values[key] = ranks.front().at(key);
      continue;
    }
    json list = json::array();
    for (const json& r : ranks) list.push_back(r.contains(key) ? r.at(key) : json());
    per_rank[key] = std::move(list);
  }
  const json doc = {{"format", std::string(kPlainDataFormat)},
                    {"version", 1},
                    {"world_size", static_cast<int>(rank_leaves.size())},
                    {"values", std::move(values)},
                    {"per_rank", std::move(per_rank)}};
  return doc.dump();
}

PlainData::PlainData(std::string_view text, std::string_view source) {
  const std::string where = "plain data of '" + std::string(source) + "'";
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::Corrupt, where + ": not JSON: " + e.what());
  }
  if (!doc.is_object() || doc.value("format", json()) != std::string(kPlainDataFormat) ||
      doc.value("version", json()) != 1 || !doc.contains("world_size") ||
      !doc["world_size"].is_number_integer() || doc["world_size"].get<int64_t>() < 1 ||
      doc["world_size"].get<int64_t>() > (int64_t{1} << 24) || !doc.contains("values") ||
      !doc["values"].is_object() || !doc.contains("per_rank") || !doc["per_rank"].is_object()) {
    throw Error(ErrorCode::Corrupt, where + ": not a ckptio.plain_data document of version 1");
  }
  world_ = doc["world_size"].get<int>();
  values_ = std::move(doc["values"]);
  per_rank_ = std::move(doc["per_rank"]);
  for (const auto& [key, list] : per_rank_.items()) {
    if (!list.is_array() || list.size() != static_cast<size_t>(world_)) {
      throw Error(ErrorCode::Corrupt,
                  where + ": key '" + key + "' has not one value per saved rank");
    }
  }
}

bool PlainData::has_prefix(std::string_view key) const {
  const std::string k(key);
  const std::string below = k + ".";
  for (const json* m : {&values_, &per_rank_}) {
    const auto& object = m->get_ref<const json::object_t&>();
    if (object.contains(k)) return true;
    auto it = object.lower_bound(below);
    if (it != object.end() && it->first.starts_with(below)) return true;
  }
  return false;
}

bool PlainData::lookup(const std::string& key, int rank, int world, PerRankRule rule,
                       json& out) const {
  if (auto it = values_.find(key); it != values_.end()) {
    out = *it;
    return true;
  }
  auto it = per_rank_.find(key);
  if (it == per_rank_.end()) {
    out = json();
    return true;
  }
  if (world == world_) {
    out = (*it)[static_cast<size_t>(rank)];
    return true;
  }
  switch (rule) {
    case PerRankRule::Rank0:
      out = (*it)[0];
      return true;
    case PerRankRule::Omit:
      return false;
    case PerRankRule::Error:
      break;
  }
  throw Error(ErrorCode::Mismatch,
              "key '" + key + "' was saved per rank on " + std::to_string(world_) +
                  " ranks (its value differed between ranks), which does not say what " +
                  std::to_string(world) +
                  " ranks load; load on the same world size, ask for rank 0's value or to omit "
                  "it, or save it equal on every rank");
}

json PlainData::value(std::string_view key, int rank, int world, PerRankRule rule) const {
  json out;
  if (!lookup(std::string(key), rank, world, rule, out)) return json();
  return out;
}

json PlainData::rebuild(std::string_view prefix, int rank, int world, PerRankRule rule) const {
  const std::string p(prefix);
  const std::string below = p + ".";
  json out = json::object();
  std::vector<std::string> keys;
  for (const json* m : {&values_, &per_rank_}) {
    const auto& object = m->get_ref<const json::object_t&>();
    for (auto it = object.lower_bound(below); it != object.end() && it->first.starts_with(below);
         ++it) {
      keys.push_back(it->first);
    }
  }
  for (const std::string& key : keys) {
    json leaf;
    if (!lookup(key, rank, world, rule, leaf)) continue;
    json* node = &out;
    std::string_view rest = std::string_view(key).substr(below.size());
    while (true) {
      const size_t dot = rest.find('.');
      const std::string part(rest.substr(0, dot));
      if (part.empty() || !node->is_object()) {
        throw Error(ErrorCode::Corrupt, "plain value '" + key + "' does not fit the object of '" +
                                            p + "' (a key is both a value and an object)");
      }
      if (dot == std::string_view::npos) {
        if (node->contains(part)) {
          throw Error(ErrorCode::Corrupt, "plain value '" + key + "' is saved twice");
        }
        (*node)[part] = std::move(leaf);
        break;
      }
      node = &(*node)[part];
      if (node->is_null()) *node = json::object();
      rest = rest.substr(dot + 1);
    }
  }
  return out;
}

std::map<std::string, std::vector<std::string>> PlainData::per_rank_texts() const {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [key, list] : per_rank_.items()) {
    auto& texts = out[key];
    for (const json& v : list) texts.push_back(v.dump());
  }
  return out;
}

}  // namespace ckptio::dist::detail
