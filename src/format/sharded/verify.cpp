// verify_sharded: every check the reader makes, on every shard, plus the warnings a load ignores.
#include <cmath>
#include <set>
#include <string>

#include "ckptio/error.h"
#include "ckptio/sharded.h"
#include "format/sharded/stale_files.h"

namespace ckptio {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

ShardedVerifyReport verify_sharded(const std::filesystem::path& path,
                                   const ShardedReadOptions& options) {
  const ShardedReader reader = ShardedReader::open(path, options);
  const ShardIndex& index = reader.index();
  ShardedVerifyReport report;
  report.flavour = index.flavour;
  report.shards.resize(index.shard_files.size());
  for (size_t s = 0; s < index.shard_files.size(); ++s) report.shards[s].file = index.shard_files[s];
  for (const auto& t : reader.tensors()) {
    auto& shard = report.shards[t.shard];
    shard.tensor_bytes += t.nbytes;
    shard.tensors += 1;
    report.tensor_bytes += t.nbytes;
    report.tensors += 1;
  }
  for (size_t s = 0; s < index.shard_files.size(); ++s) {
    report.shards[s].file_size = reader.shard_file_size(s);
    report.file_bytes += report.shards[s].file_size;
  }

  const std::string where = "index '" + (index.dir / index.index_name).string() + "'";
  if (index.total_size_bytes) {
    const double declared = *index.total_size_bytes;
    const double actual = static_cast<double>(report.tensor_bytes);
    // ColossalAI writes a float of MB: allow its rounding, never a whole MB.
    const double slack = index.flavour == IndexFlavour::ColossalAI ? 1024.0 * 1024.0 : 0.5;
    if (std::fabs(declared - actual) > slack) {
      report.warnings.push_back(where + " declares total_size " +
                                std::to_string(static_cast<uint64_t>(declared)) +
                                " bytes but the shards hold " +
                                std::to_string(report.tensor_bytes) + " tensor bytes");
    }
  } else {
    report.warnings.push_back(where + " has no metadata.total_size");
  }

  std::string base = index.index_name;
  std::string suffix = ".safetensors";
  for (const std::string_view tail : {".safetensors.index.json", ".bin.index.json"}) {
    if (ends_with(base, tail)) {
      base.resize(base.size() - tail.size());
      if (tail == ".bin.index.json") suffix = ".bin";
    }
  }
  const std::set<std::string> referenced(index.shard_files.begin(), index.shard_files.end());
  io::Env& env = options.env ? *options.env : io::Env::posix();
  for (const auto& name : env.list_dir(index.dir)) {
    if (!referenced.count(name) && detail::is_shard_like_name(name, base, suffix)) {
      report.warnings.push_back("'" + name + "' looks like a shard of " + where +
                                " but is not referenced by it (left over from another save?)");
    }
  }
  return report;
}

}  // namespace ckptio
