#include "source_dispatch.h"

#include <fmt/core.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "checkpoint_cli.h"
#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/load.h"
#include "ckptio/torch_pickle.h"
#include "cli_source.h"
#include "inspect_dcp.h"
#include "inspect_safetensors.h"
#include "inspect_sharded.h"
#include "inspect_torch.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace fs = std::filesystem;

namespace {

// Full structural parse plus the CRC-32 of every zip record.
int verify_torch(const fs::path& path) {
  pt::TorchLoadOptions options;
  options.verify_crc = true;
  const pt::TorchFile f = pt::load_torch_file(path, options);
  const size_t tensors = pt::flatten_tensors(f.root).size();
  fmt::print("{}: ok, {} ({} tensors, {} storages, {} bytes){}\n", printable(path.string()),
             f.format == pt::TorchFormat::Zip ? "torch zip archive" : "legacy torch.save stream",
             tensors, f.storages.size(), f.file_size,
             f.format == pt::TorchFormat::Zip ? "; every record's CRC-32 matches"
                                                 : "; the legacy format has no checksums");
  return 0;
}

// Sources without a dedicated inspector (a ColossalAI optimizer folder): the tensors as the
// library reads them.
int inspect_reader(const CliSource& s, bool json) {
  const CheckpointReader reader = CheckpointReader::open(s.path, s.options);
  uint64_t total = 0;
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  for (const auto& t : reader.tensors()) {
    total += t.nbytes;
    tensors.push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"nbytes", t.nbytes}});
  }
  if (json) {
    nlohmann::ordered_json doc = {{"format", source_kind_name(reader.source().kind)},
                                  {"path", reader.source().path.string()},
                                  {"tensors", tensors},
                                  {"total_bytes", total}};
    std::cout << doc.dump(2) << "\n";
    return 0;
  }
  fmt::print("format: {} ({})\n", source_kind_name(reader.source().kind),
             printable(reader.source().path.string()));
  for (const auto& t : reader.tensors()) {
    fmt::print("  {}  {} {}  {} bytes\n", printable(t.name), dtype_name(t.dtype),
               shape_to_string(t.shape), t.nbytes);
  }
  fmt::print("total: {} tensors, {} tensor bytes\n", reader.tensors().size(), total);
  return 0;
}

int verify_reader(const CliSource& s) {
  const CheckpointReader reader = CheckpointReader::open(s.path, s.options);
  uint64_t total = 0;
  for (const auto& t : reader.tensors()) {
    total += reader.tensor(t.name).nbytes();
    reader.release(t.name);
  }
  fmt::print("{}: ok, {}, {} tensors, {} tensor bytes, every file parses\n", printable(s.spec),
             source_kind_name(reader.source().kind), reader.tensors().size(), total);
  return 0;
}

int on_file(const fs::path& path, SourceKind kind, Check check, bool json) {
  switch (kind) {
    case SourceKind::Safetensors:
      return check == Check::Inspect ? inspect_safetensors(path, json) : verify_safetensors(path);
    case SourceKind::TorchZip:
    case SourceKind::TorchLegacy:
    case SourceKind::TorchTar:  // the torch reader refuses it with a precise message
      return check == Check::Inspect ? inspect_torch(path, json) : verify_torch(path);
    default:
      break;
  }
  throw Error(ErrorCode::Unsupported, "'" + path.string() + "' is not a file ckptio reads");
}

}  // namespace

int run_on_source(const std::string& spec, Check check, bool json, bool full) {
  const CliSource s = resolve_cli_source(spec);
  if (!s.component) {
    const SourceKind kind = detect_source_kind(s.path);
    const bool index_file = s.path.filename().string().ends_with(".index.json");
    if (kind != SourceKind::Directory && !index_file) return on_file(s.path, kind, check, json);
    if (kind == SourceKind::Directory && dist::is_distributed_checkpoint(s.path)) {
      // It has a manifest like a training checkpoint, but its tensors are behind the global index.
      if (check == Check::Inspect) return inspect_reader(s, json);
      const int rc = verify_training_checkpoint(s.path, full);
      return rc != 0 ? rc : verify_reader(s);
    }
    if (is_training_checkpoint(s.path)) {
      return check == Check::Inspect ? inspect_training_checkpoint(s.path, json)
                                     : verify_training_checkpoint(s.path, full);
    }
  }
  // Folders and CKPT/<component>: the library's resolution, the same convert and diff use.
  const ResolvedSource r = resolve_checkpoint_source(s.path, s.options);
  switch (r.kind) {
    case ckptio::SourceKind::SafetensorsFile:
    case ckptio::SourceKind::TorchFile:
      return on_file(r.path, detect_source_kind(r.path), check, json);
    case ckptio::SourceKind::ShardedFolder:
      return check == Check::Inspect ? inspect_sharded(r.path.parent_path(), json)
                                     : verify_sharded_folder(r.path.parent_path());
    case ckptio::SourceKind::TorchOptimizerFolder:
    case ckptio::SourceKind::DistributedFolder:
      return check == Check::Inspect ? inspect_reader(s, json) : verify_reader(s);
    case ckptio::SourceKind::DcpFolder:
      return check == Check::Inspect ? inspect_dcp(r.path, json) : verify_dcp(r.path);
  }
  throw Error(ErrorCode::Internal, "unknown source kind");
}

}  // namespace ckptio::cli
