// convert_checkpoint: any readable source to one safetensors file or a sharded folder.
#include <string>

#include "ckptio/error.h"
#include "ckptio/load.h"
#include "load/read_all.h"
#include "format/sharded/parallel_for.h"

namespace ckptio {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The base name of the output folder: the source index's base, with the pickle era's
// "pytorch_model" becoming "model" (what transformers reads).
std::string default_base_name(const ResolvedSource& source) {
  std::string base = "model";
  if (source.kind == SourceKind::ShardedFolder) {
    std::string name = source.path.filename().string();
    for (std::string_view tail : {".safetensors.index.json", ".bin.index.json", ".index.json"}) {
      if (ends_with(name, tail)) {
        base = name.substr(0, name.size() - tail.size());
        break;
      }
    }
  }
  if (base == "pytorch_model") base = "model";
  if (base == "pytorch_optim") base = "optimizer";
  if (base.empty() || base.front() == '.') base = "model";
  return base;
}

}  // namespace

ConvertReport convert_checkpoint(const std::filesystem::path& src, const std::filesystem::path& dst,
                                 const ConvertOptions& options) {
  const CheckpointReader reader = CheckpointReader::open(src, options.source, ReadMode::Mmap);
  ConvertReport report;
  report.source = reader.source();
  report.output = dst;
  const auto& infos = reader.tensors();
  detail::ReadAllResult all = detail::read_all_tensors(reader, options.dtype, options.threads);
  std::vector<Tensor>& tensors = all.tensors;
  for (bool c : all.converted) report.converted += c ? 1 : 0;
  std::vector<NamedTensor> views;
  for (size_t i = 0; i < infos.size(); ++i) {
    views.push_back({infos[i].name, tensors[i].view()});
    report.tensor_bytes += tensors[i].nbytes();
  }
  report.tensors = views.size();
  std::optional<Metadata> metadata = reader.metadata();

  if (ends_with(dst.filename().string(), ".safetensors")) {
    if (options.max_shard_size && report.tensor_bytes > *options.max_shard_size) {
      throw Error(ErrorCode::InvalidArgument,
                  "the tensors (" + std::to_string(report.tensor_bytes) +
                      " bytes) exceed --max-shard-size; give a folder as the output to shard them");
    }
    SafetensorsWriteOptions wo;
    wo.sync = options.sync;
    wo.env = options.source.env;
    if (report.source.kind == SourceKind::SafetensorsFile && report.converted == 0) {
      // Same tensors, same metadata: exactly what the reference writer makes of them.
      wo.metadata = metadata;
      wo.omit_metadata = !metadata.has_value();
    } else {
      Metadata m{{"format", "pt"}};
      if (metadata) {
        for (const auto& [k, v] : *metadata) m.emplace(k, v);
      }
      wo.metadata = std::move(m);
    }
    save_safetensors(dst, views, wo);
    report.shards = 1;
    return report;
  }

  ShardedWriteOptions so;
  so.max_shard_size = options.max_shard_size.value_or(kDefaultMaxShardSize);
  so.base_name = options.base_name.empty() ? default_base_name(report.source) : options.base_name;
  so.threads = options.threads;
  so.sync = options.sync;
  so.env = options.source.env;
  if (metadata) {
    for (const auto& [k, v] : *metadata) {
      if (k != "format" && k != "total_size") so.metadata.emplace(k, v);
    }
  }
  const ShardedWriteResult written = save_sharded(dst, views, so);
  report.shards = written.shards.size();
  return report;
}

}  // namespace ckptio
