// resolve_checkpoint_source: the one place that turns a user's path into a concrete source.
#include <array>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/load.h"

namespace ckptio {
namespace fs = std::filesystem;

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

struct Probe {
  io::Env& env;
  bool exists(const fs::path& p) const { return env.stat(p).exists; }
  bool is_dir(const fs::path& p) const {
    const io::FileInfo i = env.stat(p);
    // Env::stat does not follow a final symlink (Hub snapshots are symlinks); "link/." is followed
    // by path resolution and names a directory only when the link's target is one. (An Env
    // method that follows links would say this directly.)
    if (i.is_symlink) return env.stat(p / ".").is_directory;
    return i.exists && i.is_directory;
  }
};

ResolvedSource torch_source(const fs::path& p, std::string how, const SourceOptions& options) {
  if (!options.allow_pickle) {
    throw Error(ErrorCode::Unsafe, "'" + p.string() +
                                       "' is a PyTorch pickle and pickles are not allowed here");
  }
  return {SourceKind::TorchFile, p, std::move(how)};
}

// A file whose name does not say what it is: look at its structure.
ResolvedSource sniff_file(const fs::path& p, const SourceOptions& options, io::Env& env) {
  auto file = env.open_read(p);
  switch (detect_file_format(*file)) {
    case FileFormat::Safetensors:
      return {SourceKind::SafetensorsFile, p, "safetensors file (by content)"};
    case FileFormat::TorchZip:
    case FileFormat::TorchLegacy:
    case FileFormat::TorchTar:  // the torch reader refuses it with a precise message
      return torch_source(p, "PyTorch file (by content)", options);
    case FileFormat::Unknown:
      break;
  }
  std::array<std::byte, 9> head{};
  if (file->size() >= head.size()) {
    file->read_exact(0, head);
    uint64_t len = 0;
    std::memcpy(&len, head.data(), 8);  // little-endian hosts only, like the rest of ckptio
    if (len + 8 <= file->size() && head[8] == std::byte{'{'}) {
      // Shaped like safetensors but broken: the reader names what is wrong.
      return {SourceKind::SafetensorsFile, p, "safetensors file (by content)"};
    }
  }
  throw Error(ErrorCode::Unsupported,
              "'" + p.string() + "' is neither a safetensors file nor a PyTorch file");
}

ResolvedSource resolve_file(const fs::path& p, const SourceOptions& options, io::Env& env) {
  const std::string name = p.filename().string();
  if (name == dist::kIndexName) return {SourceKind::DistributedFolder, p, "distributed checkpoint index"};
  if (ends_with(name, ".safetensors")) return {SourceKind::SafetensorsFile, p, "safetensors file"};
  if (ends_with(name, ".index.json")) return {SourceKind::ShardedFolder, p, "index file"};
  if (ends_with(name, ".pt") || ends_with(name, ".pth") || ends_with(name, ".bin")) {
    return torch_source(p, "PyTorch file", options);
  }
  return sniff_file(p, options, env);
}

std::vector<std::string> names_with_suffix(io::Env& env, const fs::path& dir, std::string_view suffix,
                                           std::string_view exclude_suffix = {}) {
  std::vector<std::string> out;
  for (const auto& n : env.list_dir(dir)) {
    if (io::is_temp_name(n) || !ends_with(n, suffix)) continue;
    if (!exclude_suffix.empty() && ends_with(n, exclude_suffix)) continue;
    out.push_back(n);
  }
  return out;
}

ResolvedSource resolve_folder(const fs::path& dir, const SourceOptions& options, io::Env& env,
                              int depth);

bool is_training_folder(const Probe& probe, const fs::path& dir) {
  return probe.is_dir(dir / "model") || probe.exists(dir / "running_states.json") ||
         probe.exists(dir / "ckptio.manifest.json") || probe.exists(dir / "ema.safetensors") ||
         probe.is_dir(dir / "ema") || probe.exists(dir / "ema.pt");
}

// ema.safetensors, ema/ (sharded) or ema.pt; model/ or model.pt.
std::optional<ResolvedSource> training_component(const fs::path& dir, std::string_view component,
                                                 const SourceOptions& options, io::Env& env,
                                                 int depth) {
  const Probe probe{env};
  const std::string c(component);
  if (probe.exists(dir / (c + ".safetensors")) && !probe.is_dir(dir / (c + ".safetensors"))) {
    return ResolvedSource{SourceKind::SafetensorsFile, dir / (c + ".safetensors"),
                          c + " weights of a training checkpoint"};
  }
  if (probe.is_dir(dir / c)) {
    ResolvedSource r = resolve_folder(dir / c, options, env, depth + 1);
    r.how = c + " weights of a training checkpoint (" + r.how + ")";
    return r;
  }
  if (probe.exists(dir / (c + ".pt"))) {
    return torch_source(dir / (c + ".pt"), c + " weights of a training checkpoint", options);
  }
  return std::nullopt;
}

ResolvedSource resolve_folder(const fs::path& dir, const SourceOptions& options, io::Env& env,
                              int depth) {
  const Probe probe{env};
  if (depth > 2) {
    throw Error(ErrorCode::NotFound, "no weights found in '" + dir.string() + "'");
  }
  // Before the training-folder rules: a distributed checkpoint also holds ckptio.manifest.json.
  if (dist::is_distributed_checkpoint(dir, env)) {
    return {SourceKind::DistributedFolder, dir / dist::kIndexName, "distributed checkpoint"};
  }
  if (probe.exists(dir / "model.safetensors.index.json")) {
    return {SourceKind::ShardedFolder, dir / "model.safetensors.index.json", "sharded safetensors folder"};
  }
  // torch.distributed.checkpoint's commit point is `.metadata`: a folder holding it is a DCP
  // checkpoint (its items are torch.save pickles, read by the restricted unpickler).
  if (probe.exists(dir / ".metadata") && !probe.is_dir(dir / ".metadata")) {
    if (!options.allow_pickle) {
      throw Error(ErrorCode::Unsafe, "'" + dir.string() + "' is a PyTorch DCP checkpoint (pickles) and pickles are not allowed here");
    }
    return {SourceKind::DcpFolder, dir, "PyTorch DCP checkpoint"};
  }
  if (probe.exists(dir / "model.safetensors")) {
    return {SourceKind::SafetensorsFile, dir / "model.safetensors", "model.safetensors in folder"};
  }
  // Only a folder with no safetensors weights at all may be read from pickles.
  const auto st_indexes = names_with_suffix(env, dir, ".safetensors.index.json");
  const auto st_files = names_with_suffix(env, dir, ".safetensors");
  const bool has_safetensors = !st_indexes.empty() || !st_files.empty();
  if (!has_safetensors && probe.exists(dir / "pytorch_model.bin.index.json")) {
    if (!options.allow_pickle) {
      throw Error(ErrorCode::Unsafe, "'" + dir.string() + "' holds only PyTorch pickle shards and pickles are not allowed here");
    }
    return {SourceKind::ShardedFolder, dir / "pytorch_model.bin.index.json", "sharded pytorch_model.bin folder"};
  }
  if (!has_safetensors && probe.exists(dir / "pytorch_model.bin")) {
    return torch_source(dir / "pytorch_model.bin", "pytorch_model.bin in folder", options);
  }

  if (is_training_folder(probe, dir)) {
    if (options.weights != WeightsChoice::Model) {
      if (auto ema = training_component(dir, "ema", options, env, depth)) return *ema;
      if (options.weights == WeightsChoice::Ema) {
        throw Error(ErrorCode::NotFound, "training checkpoint '" + dir.string() +
                                             "' has no EMA weights (ema.safetensors, ema/, ema.pt)");
      }
    }
    if (auto model = training_component(dir, "model", options, env, depth)) return *model;
    throw Error(ErrorCode::NotFound, "training checkpoint '" + dir.string() +
                                         "' has no model weights (model/, model.safetensors, model.pt)");
  }

  if (st_indexes.size() == 1) {
    return {SourceKind::ShardedFolder, dir / st_indexes.front(), "sharded safetensors folder"};
  }
  if (st_indexes.empty() && st_files.size() == 1) {
    // "<base>-0000k-of-0000N.safetensors" with N > 1 is one shard of a set whose index is missing
    // (a sharded save cut short before its index landed): loading it alone would be a torn model.
    static const std::regex kShardName(R"(.+-\d{5}-of-(\d{5})\.safetensors)");
    const std::string& only = st_files.front();
    std::smatch m;
    if (std::regex_match(only, m, kShardName) && std::stoul(m[1].str()) > 1) {
      const unsigned long n = std::stoul(m[1].str());
      throw Error(ErrorCode::Corrupt, "folder '" + dir.string() + "' holds only '" + only +
                                          "', one shard of " + std::to_string(n) +
                                          ", and no index: the set is incomplete");
    }
    return {SourceKind::SafetensorsFile, dir / st_files.front(), "only safetensors file in folder"};
  }
  if (has_safetensors) {
    std::string names;
    for (const auto& n : st_indexes.empty() ? st_files : st_indexes) names += (names.empty() ? "" : ", ") + n;
    throw Error(ErrorCode::Corrupt, "folder '" + dir.string() +
                                        "' is ambiguous: it holds several candidates (" + names +
                                        ") and no model.safetensors[.index.json]; name one");
  }
  throw Error(ErrorCode::NotFound,
              "no weights found in folder '" + dir.string() +
                  "' (looked for model.safetensors.index.json, model.safetensors, "
                  "pytorch_model.bin.index.json, pytorch_model.bin, a training checkpoint's "
                  "ema/model, *.safetensors.index.json, *.safetensors)");
}

bool has_prefix(std::span<const std::byte> head, const unsigned char* prefix, size_t n) {
  return head.size() >= n && std::memcmp(head.data(), prefix, n) == 0;
}

// True when the file starts with a safetensors header that parses and fits the file.
bool parses_as_safetensors(const io::ReadableFile& file, std::span<const std::byte> first8) {
  const SafetensorsLimits limits;
  if (first8.size() < 8) return false;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(first8[static_cast<size_t>(i)]);
  if (n > limits.max_header_bytes || n > file.size() - 8) return false;
  std::string header(static_cast<size_t>(n), '\0');
  file.read_exact(8, std::as_writable_bytes(std::span(header.data(), header.size())));
  try {
    parse_safetensors_header(header, file.size() - 8 - n, file.path().string(), limits);
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

std::string_view file_format_name(FileFormat format) {
  switch (format) {
    case FileFormat::Safetensors: return "safetensors";
    case FileFormat::TorchZip: return "torch-zip";
    case FileFormat::TorchLegacy: return "torch-legacy";
    case FileFormat::TorchTar: return "torch-tar";
    case FileFormat::Unknown: return "unknown";
  }
  return "unknown";
}

FileFormat detect_file_format(const io::ReadableFile& file) {
  std::array<std::byte, 512> buf{};
  const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), file.size()));
  file.read_exact(0, std::span(buf.data(), n));
  const std::span<const std::byte> head(buf.data(), n);
  // The safetensors header length is arbitrary bytes: its first two can read as a pickle
  // protocol marker (80 02..80 05, lengths 640, 896, ...), so a header that parses decides first.
  if (parses_as_safetensors(file, head)) return FileFormat::Safetensors;
  static constexpr unsigned char kZip[] = {'P', 'K', 3, 4};
  if (has_prefix(head, kZip, sizeof kZip)) return FileFormat::TorchZip;
  // torch.save's legacy stream starts with the pickled magic number 0x1950a86a20f9469cfc6c
  // (LONG1, 10 bytes, STOP) after the protocol marker.
  static constexpr unsigned char kLegacyMagicRecord[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                                         0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
  if (n >= 2 + sizeof kLegacyMagicRecord && head[0] == std::byte{0x80} &&
      head[1] >= std::byte{2} && head[1] <= std::byte{5} &&
      std::memcmp(head.data() + 2, kLegacyMagicRecord, sizeof kLegacyMagicRecord) == 0) {
    return FileFormat::TorchLegacy;
  }
  if (n >= 262 && std::memcmp(head.data() + 257, "ustar", 5) == 0) return FileFormat::TorchTar;
  return FileFormat::Unknown;
}

std::string_view source_kind_name(SourceKind kind) {
  switch (kind) {
    case SourceKind::SafetensorsFile: return "safetensors file";
    case SourceKind::TorchFile: return "PyTorch file";
    case SourceKind::ShardedFolder: return "sharded folder";
    case SourceKind::TorchOptimizerFolder: return "ColossalAI optimizer folder";
    case SourceKind::DcpFolder: return "PyTorch DCP checkpoint";
    case SourceKind::DistributedFolder: return "distributed checkpoint";
  }
  return "unknown";
}

namespace {

// Everything but hf://: files and folders on this machine (through the Env).
ResolvedSource resolve_local(const fs::path& path, const SourceOptions& options, io::Env& env) {
  const io::FileInfo info = env.stat(path);
  const std::string leaf = path.filename().string();
  const bool component = leaf == "model" || leaf == "ema" || leaf == "optimizer";
  if (component && Probe{env}.is_dir(path.parent_path()) &&
      is_training_folder(Probe{env}, path.parent_path())) {
    // CKPT/ema names the EMA weights whatever form they take (ema.safetensors, ema/, ema.pt).
    if (leaf == "optimizer") {
      if (Probe{env}.exists(path / "pytorch_optim.bin.index.json")) {
        return {SourceKind::TorchOptimizerFolder, path, "ColossalAI optimizer of a training checkpoint"};
      }
      if (info.exists) return resolve_folder(path, options, env, 1);
      throw Error(ErrorCode::NotFound, "training checkpoint '" + path.parent_path().string() +
                                           "' has no optimizer/");
    }
    if (auto c = training_component(path.parent_path(), leaf, options, env, 0)) return *c;
    throw Error(ErrorCode::NotFound, "training checkpoint '" + path.parent_path().string() +
                                         "' has no " + leaf + " weights (" + leaf + "/, " + leaf +
                                         ".safetensors, " + leaf + ".pt)");
  }
  if (!info.exists) {
    // Never a Hub request: "org/name" that is not here is a typo as likely as a repo id.
    throw Error(ErrorCode::NotFound, "checkpoint '" + path.string() +
                                         "' does not exist (a Hugging Face Hub source is written "
                                         "hf://org/name)");
  }
  if (Probe{env}.is_dir(path)) return resolve_folder(path, options, env, 0);
  return resolve_file(path, options, env);
}

// hf:// reaches the Hub only through the resolver the caller passed: this library has no network
// code of its own.
ResolvedSource resolve_hub(const std::string& spec, const SourceOptions& options, io::Env& env) {
  if (!options.hub) {
    throw Error(ErrorCode::Unsupported,
                "'" + spec + "' is a Hugging Face Hub source and no Hub resolver was given "
                "(SourceOptions::hub = ckptio::hub::resolver(), from ckptio/hub.h)");
  }
  HubLocalSource local;
  try {
    local = options.hub(spec, env);
  } catch (const Error& e) {
    throw e.annotate("'" + spec + "'");
  }
  ResolvedSource r;
  try {
    r = resolve_local(local.path, options, env);
  } catch (const Error& e) {
    throw e.annotate("'" + spec + "'");
  }
  r.how += " from " + spec;
  if (r.allowed_root.empty()) r.allowed_root = local.allowed_root;
  return r;
}

}  // namespace

ResolvedSource resolve_checkpoint_source(const fs::path& path, const SourceOptions& options) {
  io::Env& env = options.env ? *options.env : io::Env::posix();
  const std::string spec = path.string();
  ResolvedSource r;
  if (spec.starts_with("hf://")) {
    r = resolve_hub(spec, options, env);
  } else {
    r = resolve_local(path, options, env);
  }
  if (!options.allowed_root.empty()) r.allowed_root = options.allowed_root;
  return r;
}

}  // namespace ckptio
