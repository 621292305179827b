// parse_shard_index: the index JSON of the Hugging Face, ColossalAI and pytorch_model.bin flavours,
// checked before any shard is touched.
#include <nlohmann/json.hpp>

#include <cctype>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "ckptio/error.h"
#include "ckptio/sharded.h"
#include "format/sharded/stale_files.h"

namespace ckptio {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A shard reference must name a file below the folder: relative, no "..", ".", empty component
// or backslash (which would mean a different path on another OS).
void check_shard_path(const std::string& file, const std::string& source) {
  const auto bad = [&](std::string_view why) {
    return Error(ErrorCode::Corrupt, source + ": shard path '" + file + "' " + std::string(why));
  };
  if (file.empty()) throw bad("is empty");
  if (file.front() == '/') throw bad("is absolute");
  if (file.find('\\') != std::string::npos) throw bad("contains a backslash");
  if (file.find('\0') != std::string::npos) throw bad("contains a NUL byte");
  size_t start = 0;
  while (true) {
    const size_t slash = file.find('/', start);
    const std::string_view part =
        std::string_view(file).substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") throw bad("escapes or is not a plain file path");
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
}

}  // namespace

std::string_view flavour_name(IndexFlavour flavour) {
  switch (flavour) {
    case IndexFlavour::HuggingFace: return "huggingface";
    case IndexFlavour::ColossalAI: return "colossalai";
    case IndexFlavour::TorchBin: return "pytorch-bin";
  }
  return "unknown";
}

ShardIndex parse_shard_index(std::string_view json, const std::filesystem::path& dir,
                             std::string_view index_name) {
  const std::string source = "index '" + (dir / index_name).string() + "'";
  ShardIndex index;
  index.dir = dir;
  index.index_name = std::string(index_name);

  // nlohmann keeps the last of two equal keys silently; a tensor listed twice must be an error.
  std::string top_key;
  std::string duplicate;
  std::unordered_set<std::string> weight_keys;
  const nlohmann::ordered_json::parser_callback_t watch_keys =
      [&](int depth, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
        if (event == nlohmann::ordered_json::parse_event_t::key) {
          if (depth == 1) {
            top_key = parsed.get<std::string>();
          } else if (depth == 2 && top_key == "weight_map") {
            if (!weight_keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
              duplicate = parsed.get<std::string>();
            }
          }
        }
        return true;
      };
  nlohmann::ordered_json doc;
  try {
    doc = nlohmann::ordered_json::parse(json.begin(), json.end(), watch_keys);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Corrupt, source + " is not valid JSON: " + e.what());
  }
  if (!duplicate.empty()) {
    throw Error(ErrorCode::Corrupt, source + " lists tensor '" + duplicate + "' more than once");
  }
  if (!doc.is_object()) throw Error(ErrorCode::Corrupt, source + " is not a JSON object");
  const auto wm = doc.find("weight_map");
  if (wm == doc.end() || !wm->is_object()) {
    throw Error(ErrorCode::Corrupt, source + " has no \"weight_map\" object");
  }

  const bool torch_bin = ends_with(index_name, ".bin.index.json");
  std::optional<bool> total_is_float;
  if (const auto md = doc.find("metadata"); md != doc.end() && !md->is_null()) {
    if (!md->is_object()) throw Error(ErrorCode::Corrupt, source + ": \"metadata\" is not an object");
    for (const auto& [k, v] : md->items()) {
      if (k == "total_size") {
        if (!v.is_number()) {
          throw Error(ErrorCode::Corrupt, source + ": \"total_size\" is not a number");
        }
        total_is_float = v.is_number_float();
        index.total_size_bytes = v.get<double>();
      } else {
        index.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
      }
    }
  }

  std::unordered_map<std::string, size_t> shard_ids;
  std::map<std::string, std::string> by_lower;  // case-folded name -> first spelling
  for (const auto& [name, file_value] : wm->items()) {
    if (name.empty()) throw Error(ErrorCode::Corrupt, source + " has an empty tensor name");
    if (!file_value.is_string()) {
      throw Error(ErrorCode::Corrupt, source + ": shard of tensor '" + name + "' is not a string");
    }
    const std::string file = file_value.get<std::string>();
    auto [it, fresh] = shard_ids.try_emplace(file, index.shard_files.size());
    if (fresh) {
      check_shard_path(file, source);
      const bool is_bin = ends_with(file, ".bin");
      const bool is_st = ends_with(file, ".safetensors");
      if (torch_bin ? !is_bin : !is_st) {
        throw Error(ErrorCode::Corrupt,
                    source + ": shard '" + file + "' must end in " +
                        (torch_bin ? "'.bin'" : "'.safetensors'") + " for this kind of index" +
                        (torch_bin ? "" : " (a safetensors index never falls back to pickles)"));
      }
      const auto [prev, unique] = by_lower.try_emplace(lower(file), file);
      if (!unique) {
        throw Error(ErrorCode::Corrupt, source + ": shard names '" + prev->second + "' and '" +
                                            file + "' differ only in case");
      }
      index.shard_files.push_back(file);
    }
    index.weight_map.emplace_back(name, it->second);
  }

  if (torch_bin) {
    index.flavour = IndexFlavour::TorchBin;
  } else if (total_is_float.has_value()) {
    index.flavour = *total_is_float ? IndexFlavour::ColossalAI : IndexFlavour::HuggingFace;
  } else {
    constexpr std::string_view kSuffix = ".safetensors.index.json";
    const std::string base(ends_with(index_name, kSuffix)
                               ? index_name.substr(0, index_name.size() - kSuffix.size())
                               : std::string_view());
    bool colossal = !index.shard_files.empty();
    for (const auto& f : index.shard_files) {
      colossal = colossal && detail::is_shard_like_name(f, base, ".safetensors") &&
                 f.find("-of-") == std::string::npos;
    }
    index.flavour = colossal ? IndexFlavour::ColossalAI : IndexFlavour::HuggingFace;
  }
  if (index.flavour == IndexFlavour::ColossalAI && index.total_size_bytes) {
    *index.total_size_bytes *= 1024.0 * 1024.0;  // ColossalAI writes MB (numel*size/1024/1024)
  }
  return index;
}

}  // namespace ckptio
