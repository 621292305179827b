// ckptio.manifest.json: the commit record of a checkpoint folder. It lists every other file of the
// folder with its size and (optionally) its xxh3-128, and is written last, so a folder whose
// manifest parses and agrees with the files is complete.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/naming.h"
#include "ckptio/io.h"

namespace ckptio::checkpoint {

inline constexpr std::string_view kManifestFormat = "ckptio.checkpoint";
inline constexpr int kManifestVersion = 1;
// Refuse absurd manifests before parsing them.
inline constexpr uint64_t kMaxManifestBytes = 64u << 20;

struct ManifestFile {
  uint64_t size = 0;
  std::string xxh3_128;  // empty when checksums were off
};

struct Manifest {
  int64_t epoch = 0;
  int64_t global_step = 0;
  // Commit order within the experiment folder (1, 2, ...); 0 when the manifest has none (written
  // by an older ckptio).
  uint64_t sequence = 0;
  std::map<std::string, ManifestFile> files;  // relative paths with '/', sorted
};

std::string manifest_to_json(const Manifest& manifest);
// Throws Error(Corrupt) naming `source` for bad JSON, a wrong format tag, an unknown version, a
// path that is absolute, empty, has "." / ".." components or names the manifest itself.
Manifest parse_manifest(std::string_view text, std::string_view source);
Manifest read_manifest(io::Env& env, const std::filesystem::path& checkpoint_dir);

// A regular file below a folder, by its '/'-joined relative path.
struct WalkedFile {
  std::string rel;
  io::FileInfo info;
};
// Every non-directory entry below `dir` (symlinks are reported as such, never followed), sorted.
std::vector<WalkedFile> walk_files(io::Env& env, const std::filesystem::path& dir);

struct ManifestCheck {
  std::vector<std::string> problems;  // each starts with the relative file name
  uint64_t files = 0;
  uint64_t bytes = 0;
  bool checksums_checked = false;
};
// Compares the folder with its manifest: each listed file present, regular, of the listed size,
// and with `full` of the listed checksum; no unlisted files. Never throws for a bad folder.
ManifestCheck check_manifest(io::Env& env, const std::filesystem::path& dir,
                             const Manifest& manifest, bool full);

}  // namespace ckptio::checkpoint
