// Reading checkpoint folders: ckptio's own (checked against the manifest first) and Open-Sora /
// ColossalAI's (running_states.json, model/ with a ColossalAI index, ema.pt or ema.safetensors,
// optimizer/ with pickled shards, lr_scheduler and sampler pickles).
#include <nlohmann/json.hpp>

#include "checkpoint/catalog.h"
#include "checkpoint/file_hash.h"
#include "checkpoint/manifest.h"
#include "checkpoint/naming.h"
#include "checkpoint/tensor_source.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "ckptio/sharded.h"
#include "ckptio/torch_pickle.h"

namespace ckptio {

namespace fs = std::filesystem;
using nlohmann::json;
using checkpoint::SourceMap;

namespace {

constexpr uint64_t kMaxJsonBytes = 256u << 20;

json read_json_file(io::Env& env, const fs::path& path) {
  const std::string text = io::read_small_file(env, path, kMaxJsonBytes);
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    throw Error(ErrorCode::Corrupt, "'" + path.string() + "' is not valid JSON");
  }
  return doc;
}

json torch_file_to_json(io::Env& env, const fs::path& path) {
  pt::TorchLoadOptions options;
  options.env = &env;
  const pt::TorchFile file = pt::load_torch_file(path, options);
  return json::parse(pt::value_to_json(file.root));
}

bool exists(io::Env& env, const fs::path& p) { return env.stat(p).exists; }
bool is_dir(io::Env& env, const fs::path& p) {
  const io::FileInfo i = env.stat(p);
  return i.exists && i.is_directory && !i.is_symlink;
}

RunningStates parse_running_states(const json& doc, const fs::path& path, std::string& extra) {
  if (!doc.is_object()) {
    throw Error(ErrorCode::Corrupt, "'" + path.string() + "' is not a JSON object");
  }
  RunningStates r;
  auto get = [&](const char* key, int64_t& out, bool required) {
    if (!doc.contains(key)) {
      if (required) {
        throw Error(ErrorCode::Corrupt, "'" + path.string() + "' has no \"" + key + "\"");
      }
      return;
    }
    if (!doc[key].is_number_integer()) {
      throw Error(ErrorCode::Corrupt,
                  "'" + path.string() + "': \"" + key + "\" is not an integer");
    }
    out = doc[key].get<int64_t>();
  };
  get("epoch", r.epoch, true);
  get("step", r.step, true);
  get("global_step", r.global_step, false);
  get("batch_size", r.batch_size, false);
  get("actual_update_step", r.actual_update_step, false);
  if (doc.contains("extra")) extra = doc["extra"].dump();
  return r;
}

// Optimizer tensors plus how each source name splits into (param, key).
struct OptimizerSource {
  SourceMap tensors;
  std::map<std::string, std::pair<std::string, std::string>> split;
  json meta = json::object();
};

OptimizerSource open_own_optimizer(io::Env& env, const fs::path& dir) {
  OptimizerSource out;
  const fs::path json_path = dir.parent_path() / checkpoint::kOptimizerJsonName;
  const json doc = read_json_file(env, json_path);
  if (!doc.is_object() || doc.value("format", "") != "ckptio.optimizer" ||
      !doc.contains("tensor_state") || !doc["tensor_state"].is_object()) {
    throw Error(ErrorCode::Corrupt, "'" + json_path.string() + "' is not a ckptio optimizer file");
  }
  out.meta = doc.contains("meta") ? doc["meta"] : json::object();
  out.tensors = checkpoint::open_tensor_folder(env, dir, std::string(checkpoint::kOptimizerDir));
  for (const auto& [name, pk] : doc["tensor_state"].items()) {
    if (!pk.is_array() || pk.size() != 2 || !pk[0].is_string() || !pk[1].is_string()) {
      throw Error(ErrorCode::Corrupt,
                  "'" + json_path.string() + "': bad tensor_state entry \"" + name + "\"");
    }
    if (out.tensors.count(name) == 0) {
      throw Error(ErrorCode::Corrupt, "'" + json_path.string() + "' lists \"" + name +
                                          "\" but the optimizer tensors do not hold it");
    }
    out.split[name] = {pk[0].get<std::string>(), pk[1].get<std::string>()};
  }
  for (const auto& [name, src] : out.tensors) {
    if (out.split.count(name) == 0) {
      throw Error(ErrorCode::Corrupt, "optimizer tensor \"" + name + "\" in '" + dir.string() +
                                          "' is not listed in optimizer.json");
    }
  }
  return out;
}

bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos;
}

// ColossalAI's sharded optimizer: pytorch_optim.bin.index.json maps parameter ids to pickled
// shards {id: {"step": ..., "exp_avg": tensor, ...}}; param_groups sit in pytorch_optim_group.bin.
OptimizerSource open_colossalai_optimizer(io::Env& env, const fs::path& dir) {
  OptimizerSource out;
  const fs::path index_path = dir / "pytorch_optim.bin.index.json";
  const json index = read_json_file(env, index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw Error(ErrorCode::Corrupt, "'" + index_path.string() + "' has no \"weight_map\"");
  }
  std::vector<std::string> shards;
  for (const auto& [param, file] : index["weight_map"].items()) {
    if (!file.is_string() || !plain_file_name(file.get<std::string>())) {
      throw Error(ErrorCode::Corrupt,
                  "'" + index_path.string() + "': bad shard name for parameter " + param);
    }
    if (std::find(shards.begin(), shards.end(), file.get<std::string>()) == shards.end()) {
      shards.push_back(file.get<std::string>());
    }
  }
  pt::TorchLoadOptions options;
  options.env = &env;
  json state_meta = json::object();
  for (const std::string& shard : shards) {
    const fs::path shard_path = dir / shard;
    const pt::TorchFile file = pt::load_torch_file(shard_path, options);
    const pt::Value* root = &file.root;
    if (const pt::Value* state = root->find("state"); state != nullptr && state->is_dict()) {
      root = state;
    }
    if (!root->is_dict()) {
      throw Error(ErrorCode::Corrupt, "'" + shard_path.string() + "' is not a dict of states");
    }
    for (const auto& [param_key, param_state] : root->dict_items()) {
      const std::string param = pt::Value::key_to_string(param_key);
      if (!param_state.is_dict()) {
        throw Error(ErrorCode::Corrupt,
                    "'" + shard_path.string() + "': state of parameter " + param + " is not a dict");
      }
      for (const auto& [k, v] : param_state.dict_items()) {
        const std::string key = pt::Value::key_to_string(k);
        if (v.is_tensor()) {
          const std::string name = checkpoint::optimizer_tensor_name(param, key);
          const Tensor t = v.as_tensor().contiguous();
          out.tensors.merge(checkpoint::source_from_tensors(TensorMap{{name, t}}));
          out.split[name] = {param, key};
        } else {
          state_meta[param][key] = json::parse(pt::value_to_json(v));
        }
      }
    }
  }
  std::string group_file = "pytorch_optim_group.bin";
  if (index.contains("metadata") && index["metadata"].is_object() &&
      index["metadata"].contains("param_groups") && index["metadata"]["param_groups"].is_string()) {
    group_file = index["metadata"]["param_groups"].get<std::string>();
  }
  if (plain_file_name(group_file) && exists(env, dir / group_file)) {
    json groups = torch_file_to_json(env, dir / group_file);
    if (groups.is_object() && groups.contains("param_groups")) groups = groups["param_groups"];
    out.meta["param_groups"] = std::move(groups);
  }
  out.meta["state"] = std::move(state_meta);
  return out;
}

// The optimizer of either layout, or nullopt when the folder has none.
std::optional<OptimizerSource> open_optimizer(io::Env& env, const fs::path& ckpt) {
  const fs::path dir = ckpt / checkpoint::kOptimizerDir;
  if (!is_dir(env, dir)) return std::nullopt;
  if (exists(env, ckpt / checkpoint::kOptimizerJsonName)) return open_own_optimizer(env, dir);
  if (exists(env, dir / "pytorch_optim.bin.index.json")) {
    return open_colossalai_optimizer(env, dir);
  }
  throw Error(ErrorCode::Unsupported,
              "'" + dir.string() + "' holds neither optimizer.json nor pytorch_optim.bin.index.json");
}

std::optional<SourceMap> open_model(io::Env& env, const fs::path& ckpt) {
  const fs::path dir = ckpt / checkpoint::kModelDir;
  if (!is_dir(env, dir)) return std::nullopt;
  return checkpoint::open_tensor_folder(env, dir, std::string(checkpoint::kModelBaseName));
}

std::optional<SourceMap> open_ema(io::Env& env, const fs::path& ckpt) {
  const std::string ema(checkpoint::kEmaName);
  const fs::path single = ckpt / single_file_name(ema);
  if (exists(env, single)) return checkpoint::open_safetensors_source(env, single);
  if (is_dir(env, ckpt / ema)) return checkpoint::open_tensor_folder(env, ckpt / ema, ema);
  const fs::path pt = ckpt / checkpoint::kEmaTorchName;
  if (exists(env, pt)) return checkpoint::open_torch_source(env, pt);
  return std::nullopt;
}

std::optional<json> open_json_component(io::Env& env, const fs::path& ckpt,
                                        const std::string& name) {
  if (exists(env, ckpt / (name + ".json"))) return read_json_file(env, ckpt / (name + ".json"));
  const io::FileInfo pickle = env.stat(ckpt / name);
  if (pickle.exists && !pickle.is_directory) return torch_file_to_json(env, ckpt / name);
  return std::nullopt;
}

void missing_component(const fs::path& ckpt, const std::string& name, bool strict,
                       LoadResult& result) {
  if (strict) {
    throw Error(ErrorCode::NotFound,
                "checkpoint '" + ckpt.string() + "' has no " + name + " component");
  }
  result.missing_components.push_back(name);
}

void load_optimizer(const OptimizerSource& src, OptimizerState& target, bool strict,
                    LoadResult& result) {
  TensorMap flat;
  for (auto& [param, tensors] : target.tensors) {
    for (auto& [key, tensor] : tensors) flat[checkpoint::optimizer_tensor_name(param, key)] = tensor;
  }
  const bool fill_all = flat.empty();
  if (!fill_all) {
    // In-place targets are keyed by (param, key); translate the source's names the same way.
    SourceMap by_target_name;
    for (const auto& [name, t] : src.tensors) {
      const auto& [param, key] = src.split.at(name);
      by_target_name[checkpoint::optimizer_tensor_name(param, key)] = t;
    }
    checkpoint::fill_tensor_map(by_target_name, flat, "optimizer", strict, result);
  } else {
    checkpoint::fill_tensor_map(src.tensors, flat, "optimizer", strict, result);
    for (auto& [name, tensor] : flat) {
      const auto& [param, key] = src.split.at(name);
      target.tensors[param][key] = std::move(tensor);
    }
  }
  target.meta = src.meta.dump();
}

// Whether manifest file `rel` belongs to a component `targets` asks for (running_states.json is
// always read).
bool requested(const std::string& rel, const LoadTargets& targets) {
  if (rel == checkpoint::kRunningStatesName) return true;
  using namespace checkpoint;
  const auto in = [&](std::string_view dir) {
    return rel.size() > dir.size() && rel.starts_with(dir) && rel[dir.size()] == '/';
  };
  if (targets.model && in(kModelDir)) return true;
  if (targets.ema && (rel == single_file_name(kEmaName) || in(kEmaName))) return true;
  if (targets.optimizer && in(kOptimizerDir)) return true;
  if (targets.lr_scheduler && rel == kLrSchedulerName) return true;
  if (targets.sampler && rel == kSamplerName) return true;
  return false;
}

// Checks the xxh3-128 of every file the load will read. Each file is mapped and hashed at memory
// speed; this is the one pass over the disk, after which the loader copies the tensors from the
// page cache. Error(Corrupt) naming the first file that does not match.
void check_checksums(io::Env& env, const fs::path& dir, const checkpoint::Manifest& manifest,
                     const LoadTargets& targets) {
  for (const auto& [rel, expected] : manifest.files) {
    if (expected.xxh3_128.empty() || !requested(rel, targets)) continue;
    std::string actual;
    if (expected.size == 0) {
      actual = checkpoint::xxh3_128_hex(std::span<const std::byte>());
    } else {
      const auto mapped = env.map_read(dir / rel);
      actual = checkpoint::xxh3_128_hex(mapped->bytes());
    }
    if (actual != expected.xxh3_128) {
      throw Error(ErrorCode::Corrupt, rel + ": checksum mismatch (xxh3-128 " + actual +
                                          ", the manifest says " + expected.xxh3_128 + ")");
    }
  }
}

}  // namespace

LoadResult load_checkpoint_folder(const fs::path& path, const LoadTargets& targets,
                                  const CheckpointLoadOptions& options) {
  io::Env& env = options.env ? *options.env : io::Env::posix();
  LoadResult result;
  result.path = path;
  try {
    if (!is_dir(env, path)) {
      throw Error(ErrorCode::NotFound, "'" + path.string() + "' is not a checkpoint folder");
    }
    if (exists(env, path / checkpoint::kManifestName)) {
      const checkpoint::Manifest manifest = checkpoint::read_manifest(env, path);
      const checkpoint::ManifestCheck check =
          checkpoint::check_manifest(env, path, manifest, /*full=*/false);
      if (!check.problems.empty()) {
        std::string msg = "checkpoint is damaged:";
        for (const auto& p : check.problems) msg += " " + p + ";";
        throw Error(ErrorCode::Corrupt, msg);
      }
      check_checksums(env, path, manifest, targets);
    } else if (!exists(env, path / checkpoint::kRunningStatesName)) {
      throw Error(ErrorCode::NotFound, "not a checkpoint folder: it has neither " +
                                           std::string(checkpoint::kManifestName) + " nor " +
                                           std::string(checkpoint::kRunningStatesName));
    }
    const fs::path rs_path = path / checkpoint::kRunningStatesName;
    result.running = parse_running_states(read_json_file(env, rs_path), rs_path, result.extra);

    if (targets.model) {
      if (auto src = open_model(env, path)) {
        checkpoint::fill_tensor_map(*src, *targets.model, "model", options.strict, result);
      } else {
        missing_component(path, "model", options.strict, result);
      }
    }
    if (targets.ema) {
      if (auto src = open_ema(env, path)) {
        checkpoint::fill_tensor_map(*src, *targets.ema, "ema", options.strict, result);
      } else {
        missing_component(path, "ema", options.strict, result);
      }
    }
    if (targets.optimizer) {
      if (auto src = open_optimizer(env, path)) {
        load_optimizer(*src, *targets.optimizer, options.strict, result);
      } else {
        missing_component(path, "optimizer", options.strict, result);
      }
    }
    for (auto [name, target] : {std::pair{"lr_scheduler", targets.lr_scheduler},
                                std::pair{"sampler", targets.sampler}}) {
      if (target == nullptr) continue;
      if (auto value = open_json_component(env, path, name)) {
        *target = value->dump();
      } else {
        missing_component(path, name, options.strict, result);
      }
    }
  } catch (const Error& e) {
    throw e.annotate("loading checkpoint '" + path.string() + "'");
  }
  return result;
}

VerifyReport verify_checkpoint(const fs::path& path, const CheckpointFolderOptions& options) {
  io::Env& env = options.env ? *options.env : io::Env::posix();
  const bool full = options.depth == VerifyDepth::Full;
  if (!is_dir(env, path)) {
    throw Error(ErrorCode::NotFound, "'" + path.string() + "' is not a checkpoint folder");
  }
  VerifyReport report;
  report.path = path;
  if (exists(env, path / checkpoint::kManifestName)) {
    report.has_manifest = true;
    try {
      const checkpoint::Manifest manifest = checkpoint::read_manifest(env, path);
      const checkpoint::ManifestCheck check = checkpoint::check_manifest(env, path, manifest, full);
      report.problems = check.problems;
      report.files = check.files;
      report.bytes = check.bytes;
      report.checksums_checked = check.checksums_checked;
    } catch (const Error& e) {
      report.problems.push_back(std::string(checkpoint::kManifestName) + ": " + e.message());
    }
    report.ok = report.problems.empty();
    return report;
  }
  // A folder written by another tool: no checksums, so check that every part parses and (with
  // `full`) that every tensor can be read.
  auto attempt = [&](const std::string& what, const std::function<void()>& fn) {
    try {
      fn();
    } catch (const Error& e) {
      report.problems.push_back(what + ": " + e.message());
    }
  };
  report.problems.push_back(std::string(checkpoint::kManifestName) +
                            ": missing (not written by ckptio; sizes and checksums unknown)");
  if (!exists(env, path / checkpoint::kRunningStatesName)) {
    report.ok = false;
    return report;
  }
  report.problems.clear();
  for (const auto& f : checkpoint::walk_files(env, path)) {
    ++report.files;
    report.bytes += f.info.size;
  }
  auto read_all = [&](const SourceMap& src) {
    if (!full) return;
    for (const auto& [name, t] : src) (void)t.read_owned();
  };
  attempt(std::string(checkpoint::kRunningStatesName), [&] {
    std::string extra;
    parse_running_states(read_json_file(env, path / checkpoint::kRunningStatesName),
                         path / checkpoint::kRunningStatesName, extra);
  });
  attempt("model", [&] {
    if (auto src = open_model(env, path)) read_all(*src);
  });
  attempt("ema", [&] {
    if (auto src = open_ema(env, path)) read_all(*src);
  });
  attempt("optimizer", [&] {
    if (auto src = open_optimizer(env, path)) read_all(src->tensors);
  });
  attempt("lr_scheduler", [&] { (void)open_json_component(env, path, "lr_scheduler"); });
  attempt("sampler", [&] { (void)open_json_component(env, path, "sampler"); });
  report.ok = report.problems.empty();
  return report;
}

}  // namespace ckptio
