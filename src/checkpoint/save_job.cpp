#include "checkpoint/save_job.h"

#include <mutex>

#include "checkpoint/catalog.h"
#include "checkpoint/manifest.h"
#include "checkpoint/naming.h"
#include "ckptio/error.h"

namespace ckptio::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

json parse_json_text(std::string_view text, std::string_view what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, std::string(what) + " is not JSON text: " + e.what());
  }
}

std::string pretty_json(std::string_view text, std::string_view what) {
  return parse_json_text(text, what).dump(2) + "\n";
}

std::string running_states_to_json(const RunningStates& r, std::string_view extra_json) {
  const json extra = parse_json_text(extra_json, "extra");
  json doc = json::object();
  doc["epoch"] = r.epoch;
  doc["step"] = r.step;
  doc["global_step"] = r.global_step;
  doc["batch_size"] = r.batch_size;
  doc["actual_update_step"] = r.actual_update_step;
  doc["extra"] = extra;
  return doc.dump(4) + "\n";
}

std::string optimizer_to_json(const OptimizerState& state) {
  json tensor_state = json::object();
  for (const auto& [param, tensors] : state.tensors) {
    for (const auto& [key, tensor] : tensors) {
      tensor_state[optimizer_tensor_name(param, key)] = json::array({param, key});
    }
  }
  json doc = {{"format", "ckptio.optimizer"},
              {"version", 1},
              {"tensor_state", std::move(tensor_state)},
              {"meta", parse_json_text(state.meta, "optimizer meta")}};
  return doc.dump(2) + "\n";
}

void SaveJob::phase(SavePhase p) const {
  if (on_phase) on_phase(p, SaveInfo{experiment_dir / final_name, epoch, global_step});
}

void SaveJob::phase_after_commit(SavePhase p) const {
  try {
    phase(p);
  } catch (const std::exception& err) {
    emit_warning(warn, "the on_phase hook failed in phase " + std::string(save_phase_name(p)) +
                           " of the committed checkpoint '" +
                           (experiment_dir / final_name).string() + "': " + err.what());
  } catch (...) {
    emit_warning(warn, "the on_phase hook failed in phase " + std::string(save_phase_name(p)) +
                           " of the committed checkpoint '" +
                           (experiment_dir / final_name).string() + "'");
  }
}

void SaveJob::commit(const fs::path& temp, const fs::path& final_path) {
  io::FolderCommitOptions options;
  options.sync = settings.sync;
  options.sync_files = false;  // every file was fsynced as it was written
  options.warn = [this](const std::string& text) { emit_warning(warn, text); };
  fs::path damaged;
  if (set_aside_damaged && env->stat(final_path).exists) {
    // Kept for a person under a name no listing, latest or prune ever takes.
    damaged = free_damaged_path(*env, experiment_dir, final_name);
    options.if_exists = io::IfExists::MoveAside;
    options.aside = damaged;
  } else if (replace) {
    // Without RENAME_EXCHANGE the old checkpoint waits under replaced_folder_name until the new
    // one is durable; recover_replaced_folders puts it back after a crash in between.
    options.if_exists = io::IfExists::Replace;
    options.aside = experiment_dir / replaced_folder_name(final_name);
  }
  io::commit_folder(*env, temp, final_path, options);
  if (!damaged.empty()) {
    emit_warning(warn, "'" + final_path.string() + "' did not verify (" + damaged_problem +
                           "): moved it to '" + damaged.filename().string() +
                           "' and saved the new checkpoint in its place");
  }
}

fs::path SaveJob::run() {
  io::Env& e = *env;
  const fs::path final_path = experiment_dir / final_name;
  const fs::path temp = experiment_dir / temp_folder_name(final_name);
  try {
    phase(SavePhase::WriteFiles);
    if (!e.stat(experiment_dir).exists) {
      if (settings.sync) {
        io::create_dirs_synced(e, experiment_dir);  // every new level, not only the last
      } else {
        e.create_dirs(experiment_dir);
      }
    }
    e.create_dirs(temp);
    Manifest manifest;
    manifest.epoch = epoch;
    manifest.global_step = global_step;
    auto record = [&](const WrittenFile& f) { manifest.files[f.rel] = {f.size, f.xxh3_128}; };
    auto record_all = [&](const std::vector<WrittenFile>& files) {
      for (const auto& f : files) record(f);
    };
    const std::string model_dir(kModelDir), ema_name(kEmaName), optimizer_dir(kOptimizerDir);
    if (model) {
      record_all(write_tensor_set(e, temp, model_dir, model_dir, std::string(kModelBaseName),
                                  *model, max_shard_bytes, settings));
    }
    if (ema) {
      record_all(write_tensor_set(e, temp, "", ema_name, ema_name, *ema, max_shard_bytes,
                                  settings));
    }
    if (optimizer_tensors) {
      record_all(write_tensor_set(e, temp, optimizer_dir, optimizer_dir, optimizer_dir,
                                  *optimizer_tensors, max_shard_bytes, settings));
      record(write_text_file(e, temp, std::string(kOptimizerJsonName), *optimizer_json, settings));
    }
    if (lr_scheduler_json) {
      record(write_text_file(e, temp, std::string(kLrSchedulerName), *lr_scheduler_json, settings));
    }
    if (sampler_json) {
      record(write_text_file(e, temp, std::string(kSamplerName), *sampler_json, settings));
    }
    record(write_text_file(e, temp, std::string(kRunningStatesName), running_states_json,
                           settings));

    phase(SavePhase::WriteManifest);
    manifest.sequence = next_commit_sequence(e, experiment_dir);
    WriteSettings manifest_settings = settings;
    manifest_settings.checksums = false;
    write_text_file(e, temp, std::string(kManifestName), manifest_to_json(manifest),
                    manifest_settings);

    phase(SavePhase::Commit);
    std::unique_lock<std::shared_mutex> lock;
    if (catalog_mutex) lock = std::unique_lock(*catalog_mutex);
    commit(temp, final_path);
  } catch (const Error& err) {
    try {
      e.remove_all(temp);
    } catch (...) {
      // The next successful save removes it.
    }
    throw err.annotate("saving checkpoint '" + final_path.string() + "'");
  } catch (...) {
    try {
      e.remove_all(temp);
    } catch (...) {
    }
    throw;
  }

  phase_after_commit(SavePhase::Prune);
  {
    std::unique_lock<std::shared_mutex> lock;
    if (catalog_mutex) lock = std::unique_lock(*catalog_mutex);
    tidy_after_commit(e, experiment_dir, final_name, keep_n_latest, prune_rules, warn);
  }
  phase_after_commit(SavePhase::Done);
  return final_path;
}

}  // namespace ckptio::checkpoint
