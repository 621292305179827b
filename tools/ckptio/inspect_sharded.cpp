#include "inspect_sharded.h"

#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/load.h"
#include "ckptio/sharded.h"
#include "inspect_safetensors.h"
#include "source_kind.h"

namespace ckptio::cli {
namespace fs = std::filesystem;

namespace {

bool has_index(const fs::path& dir) {
  for (const auto& n : io::Env::posix().list_dir(dir)) {
    if (!io::is_temp_name(n) && n.size() > 11 && n.ends_with(".index.json")) return true;
  }
  return false;
}

}  // namespace

bool is_sharded_folder(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  return has_index(dir) || fs::exists(dir / "model.safetensors", ec);
}

int inspect_sharded(const fs::path& dir, bool json) {
  if (!has_index(dir)) return inspect_safetensors(dir / "model.safetensors", json);
  ShardedReadOptions options;
  options.mode = ReadMode::Pread;  // headers only
  const ShardedReader reader = ShardedReader::open(dir, options);
  const ShardIndex& index = reader.index();
  const auto tensors = reader.tensors();
  std::vector<uint64_t> shard_tensor_bytes(index.shard_files.size(), 0);
  std::vector<size_t> shard_tensors(index.shard_files.size(), 0);
  uint64_t total = 0;
  for (const auto& t : tensors) {
    shard_tensor_bytes[t.shard] += t.nbytes;
    shard_tensors[t.shard] += 1;
    total += t.nbytes;
  }
  uint64_t file_total = 0;
  for (size_t s = 0; s < index.shard_files.size(); ++s) file_total += reader.shard_file_size(s);

  if (json) {
    nlohmann::ordered_json out;
    out["format"] = "sharded";
    out["flavour"] = flavour_name(index.flavour);
    out["index"] = index.index_name;
    if (index.total_size_bytes) out["declared_total_size"] = *index.total_size_bytes;
    out["metadata"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : index.metadata) out["metadata"][k] = v;
    out["shards"] = nlohmann::ordered_json::array();
    for (size_t s = 0; s < index.shard_files.size(); ++s) {
      out["shards"].push_back({{"file", index.shard_files[s]},
                               {"file_size", reader.shard_file_size(s)},
                               {"tensor_bytes", shard_tensor_bytes[s]},
                               {"tensors", shard_tensors[s]}});
    }
    out["tensors"] = nlohmann::ordered_json::array();
    for (const auto& t : tensors) {
      out["tensors"].push_back({{"name", t.name},
                                {"dtype", dtype_name(t.dtype)},
                                {"shape", t.shape},
                                {"nbytes", t.nbytes},
                                {"shard", index.shard_files[t.shard]}});
    }
    out["total_bytes"] = total;
    out["total_file_bytes"] = file_total;
    fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    return 0;
  }
  fmt::print("folder: {}\nformat: sharded ({} index {})\n", printable(dir.string()),
             flavour_name(index.flavour), printable(index.index_name));
  if (index.total_size_bytes) {
    fmt::print("declared total_size: {:.0f} bytes\n", *index.total_size_bytes);
  }
  if (!index.metadata.empty()) {
    fmt::print("metadata ({} keys):\n", index.metadata.size());
    for (const auto& [k, v] : index.metadata) fmt::print("  {}: {}\n", printable(k), printable(v));
  }
  fmt::print("shards ({}):\n  {:<44}  {:>8}  {:>16}  {:>16}\n", index.shard_files.size(), "file",
             "tensors", "tensor bytes", "file bytes");
  for (size_t s = 0; s < index.shard_files.size(); ++s) {
    fmt::print("  {:<44}  {:>8}  {:>16}  {:>16}\n", printable(index.shard_files[s]), shard_tensors[s],
               shard_tensor_bytes[s], reader.shard_file_size(s));
  }
  size_t name_width = 4;
  for (const auto& t : tensors) name_width = std::max(name_width, printable(t.name).size());
  name_width = std::min<size_t>(name_width, 60);
  fmt::print("tensors ({}):\n  {:<{}}  {:<11}  {:<20}  {:>14}  {}\n", tensors.size(), "name", name_width,
             "dtype", "shape", "bytes", "shard");
  for (const auto& t : tensors) {
    fmt::print("  {:<{}}  {:<11}  {:<20}  {:>14}  {}\n", printable(t.name), name_width,
               dtype_name(t.dtype), shape_to_string(t.shape), t.nbytes,
               printable(index.shard_files[t.shard]));
  }
  fmt::print("total: {} tensors, {} tensor bytes, {} file bytes in {} shards\n", tensors.size(), total,
             file_total, index.shard_files.size());
  return 0;
}

int verify_sharded_folder(const fs::path& dir) {
  if (!has_index(dir)) return verify_safetensors(dir / "model.safetensors");
  ShardedReadOptions options;
  options.mode = ReadMode::Pread;
  const ShardedVerifyReport report = verify_sharded(dir, options);
  // Read every tensor once, so unreadable bytes fail here and not in a training job.
  const ShardedReader reader = ShardedReader::open(dir, options);
  std::vector<std::byte> buf;
  for (const auto& t : reader.tensors()) {
    buf.resize(t.nbytes);
    reader.read_into(t.name, buf);
  }
  for (const auto& w : report.warnings) fmt::print("warning: {}\n", printable(w));
  fmt::print("ok: {} is a valid sharded folder ({} index, {} shards, {} tensors, {} tensor bytes, {} "
             "file bytes)\n",
             printable(dir.string()), flavour_name(report.flavour), report.shards.size(),
             report.tensors, report.tensor_bytes, report.file_bytes);
  for (const auto& s : report.shards) {
    fmt::print("  {}: {} tensors, {} tensor bytes, {} file bytes\n", printable(s.file), s.tensors,
               s.tensor_bytes, s.file_size);
  }
  return 0;
}

}  // namespace ckptio::cli
