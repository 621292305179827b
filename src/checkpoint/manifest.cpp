#include "checkpoint/manifest.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "checkpoint/file_hash.h"
#include "ckptio/error.h"

namespace ckptio::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

std::string manifest_to_json(const Manifest& manifest) {
  json files = json::object();
  for (const auto& [rel, f] : manifest.files) {
    json entry = {{"size", f.size}};
    if (!f.xxh3_128.empty()) entry["xxh3_128"] = f.xxh3_128;
    files[rel] = std::move(entry);
  }
  json doc = {{"format", kManifestFormat},
              {"version", kManifestVersion},
              {"epoch", manifest.epoch},
              {"global_step", manifest.global_step},
              {"files", std::move(files)}};
  if (manifest.sequence > 0) doc["sequence"] = manifest.sequence;
  return doc.dump(2) + "\n";
}

static bool valid_relative_path(std::string_view rel) {
  if (rel.empty() || rel.front() == '/' || rel.back() == '/') return false;
  if (rel.find('\\') != std::string_view::npos || rel.find('\0') != std::string_view::npos) {
    return false;
  }
  size_t start = 0;
  while (start <= rel.size()) {
    size_t end = rel.find('/', start);
    if (end == std::string_view::npos) end = rel.size();
    const std::string_view part = rel.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return rel != kManifestName;
}

static bool is_hex_digest(const std::string& s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Manifest parse_manifest(std::string_view text, std::string_view source) {
  const std::string where(source);
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    throw Error(ErrorCode::Corrupt, "'" + where + "' is not a JSON object");
  }
  auto fail = [&](const std::string& why) {
    return Error(ErrorCode::Corrupt, "'" + where + "': " + why);
  };
  if (!doc.contains("format") || doc["format"] != kManifestFormat) {
    throw fail("\"format\" is not \"" + std::string(kManifestFormat) + "\"");
  }
  if (!doc.contains("version") || !doc["version"].is_number_integer()) {
    throw fail("\"version\" is missing");
  }
  if (doc["version"].get<int64_t>() != kManifestVersion) {
    throw Error(ErrorCode::Unsupported, "'" + where + "': manifest version " +
                                            doc["version"].dump() + " is not supported");
  }
  Manifest m;
  for (const char* key : {"epoch", "global_step"}) {
    if (!doc.contains(key) || !doc[key].is_number_integer()) {
      throw fail(std::string("\"") + key + "\" is missing or not an integer");
    }
  }
  m.epoch = doc["epoch"].get<int64_t>();
  m.global_step = doc["global_step"].get<int64_t>();
  if (doc.contains("sequence")) {
    if (!doc["sequence"].is_number_unsigned()) throw fail("\"sequence\" is not a count");
    m.sequence = doc["sequence"].get<uint64_t>();
  }
  if (!doc.contains("files") || !doc["files"].is_object()) throw fail("\"files\" is missing");
  for (const auto& [rel, entry] : doc["files"].items()) {
    if (!valid_relative_path(rel)) throw fail("bad file name \"" + rel + "\"");
    if (!entry.is_object() || !entry.contains("size") || !entry["size"].is_number_unsigned()) {
      throw fail("entry \"" + rel + "\" has no valid \"size\"");
    }
    ManifestFile f;
    f.size = entry["size"].get<uint64_t>();
    if (entry.contains("xxh3_128")) {
      if (!entry["xxh3_128"].is_string() || !is_hex_digest(entry["xxh3_128"].get<std::string>())) {
        throw fail("entry \"" + rel + "\" has a malformed \"xxh3_128\"");
      }
      f.xxh3_128 = entry["xxh3_128"].get<std::string>();
    }
    m.files.emplace(rel, std::move(f));
  }
  return m;
}

Manifest read_manifest(io::Env& env, const fs::path& checkpoint_dir) {
  const fs::path path = checkpoint_dir / kManifestName;
  const std::string text = io::read_small_file(env, path, kMaxManifestBytes);
  return parse_manifest(text, path.string());
}

static void walk_into(io::Env& env, const fs::path& dir, const std::string& prefix,
                      std::vector<WalkedFile>& out, int depth) {
  if (depth > 32) {
    throw Error(ErrorCode::Corrupt, "'" + dir.string() + "': folders nested too deeply");
  }
  for (const std::string& name : env.list_dir(dir)) {
    const io::FileInfo info = env.stat(dir / name);
    const std::string rel = prefix.empty() ? name : prefix + "/" + name;
    if (info.is_directory && !info.is_symlink) {
      walk_into(env, dir / name, rel, out, depth + 1);
    } else {
      out.push_back({rel, info});
    }
  }
}

std::vector<WalkedFile> walk_files(io::Env& env, const fs::path& dir) {
  std::vector<WalkedFile> out;
  walk_into(env, dir, "", out, 0);
  std::sort(out.begin(), out.end(),
            [](const WalkedFile& a, const WalkedFile& b) { return a.rel < b.rel; });
  return out;
}

ManifestCheck check_manifest(io::Env& env, const fs::path& dir, const Manifest& manifest,
                             bool full) {
  ManifestCheck check;
  std::vector<WalkedFile> present;
  try {
    present = walk_files(env, dir);
  } catch (const Error& e) {
    check.problems.push_back(e.message());
    return check;
  }
  std::map<std::string, io::FileInfo> by_name;
  for (const auto& f : present) by_name.emplace(f.rel, f.info);
  bool any_checksum = false;
  for (const auto& [rel, expected] : manifest.files) {
    auto it = by_name.find(rel);
    if (it == by_name.end()) {
      check.problems.push_back(rel + ": listed in the manifest but missing");
      continue;
    }
    const io::FileInfo& info = it->second;
    if (info.is_symlink || info.is_directory) {
      check.problems.push_back(rel + ": not a regular file");
      continue;
    }
    ++check.files;
    check.bytes += info.size;
    if (info.size != expected.size) {
      check.problems.push_back(rel + ": size " + std::to_string(info.size) +
                               " bytes, the manifest says " + std::to_string(expected.size));
      continue;
    }
    if (full && !expected.xxh3_128.empty()) {
      any_checksum = true;
      try {
        const std::string actual = xxh3_128_file(env, dir / rel);
        if (actual != expected.xxh3_128) {
          check.problems.push_back(rel + ": checksum mismatch (xxh3-128 " + actual +
                                   ", the manifest says " + expected.xxh3_128 + ")");
        }
      } catch (const Error& e) {
        check.problems.push_back(rel + ": " + e.message());
      }
    }
  }
  for (const auto& f : present) {
    if (f.rel != kManifestName && manifest.files.count(f.rel) == 0) {
      check.problems.push_back(f.rel + ": not listed in the manifest");
    }
  }
  check.checksums_checked = full && any_checksum;
  return check;
}

}  // namespace ckptio::checkpoint
