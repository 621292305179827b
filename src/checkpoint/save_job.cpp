#include "checkpoint/save_job.h"

#include "checkpoint/catalog.h"
#include "checkpoint/manifest.h"
#include "checkpoint/naming.h"
#include "ckptio/error.h"

namespace ckptio::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

std::string running_states_to_json(const RunningStates& r, const json& extra) {
  json doc = json::object();
  doc["epoch"] = r.epoch;
  doc["step"] = r.step;
  doc["global_step"] = r.global_step;
  doc["batch_size"] = r.batch_size;
  doc["actual_update_step"] = r.actual_update_step;
  doc["extra"] = extra;
  return doc.dump(4) + "\n";
}

std::string optimizer_tensor_name(const std::string& param, const std::string& key) {
  return "state." + param + "." + key;
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
              {"meta", state.meta}};
  return doc.dump(2) + "\n";
}

// rename(2) cannot replace a non-empty folder; Env::exchange (RENAME_EXCHANGE) swaps the two
// atomically, so a reader sees the old checkpoint or the new one, never neither. False when the
// filesystem cannot.
static bool exchange_folders(io::Env& env, const fs::path& a, const fs::path& b) {
  try {
    env.exchange(a, b);
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Unsupported) return false;
    throw;
  }
}

void SaveJob::commit(const fs::path& temp, const fs::path& final_path) {
  io::Env& e = *env;
  const io::FileInfo existing = e.stat(final_path);
  if (existing.exists) {
    if (!replace) {
      throw Error(ErrorCode::AlreadyExists,
                  "checkpoint '" + final_path.string() + "' already exists (ask to replace it)");
    }
    if (exchange_folders(e, temp, final_path)) {
      // `temp` now holds the old checkpoint under a temp name: debris if we crash here.
      if (settings.fsync) {
        try {
          e.sync_dir(experiment_dir);
        } catch (...) {
          try {
            e.exchange(temp, final_path);  // the save failed: put the old checkpoint back
          } catch (...) {
          }
          throw;
        }
      }
      e.remove_all(temp);
      return;
    }
    // No RENAME_EXCHANGE on this filesystem: move the old one aside first. A crash between the
    // two renames leaves the old checkpoint under a temp name and no checkpoint at this step.
    remove_checkpoint_folder(e, final_path);
  }
  e.rename(temp, final_path);
  if (settings.fsync) {
    try {
      e.sync_dir(experiment_dir);
    } catch (...) {
      // The rename may not be durable and the save is reported as failed: take the folder back
      // so that a retry of this step does not find it in the way.
      try {
        e.rename(final_path, temp);
      } catch (...) {
      }
      throw;
    }
  }
}

fs::path SaveJob::run() {
  io::Env& e = *env;
  const fs::path final_path = experiment_dir / final_name;
  const fs::path temp = experiment_dir / temp_folder_name(final_name);
  try {
    phase(SavePhase::WriteFiles);
    if (!e.stat(experiment_dir).exists) {
      if (settings.fsync) {
        io::create_dirs_synced(e, experiment_dir);  // every new level, not only the last
      } else {
        e.create_dirs(experiment_dir);
      }
    }
    e.create_dirs(temp);
    Manifest manifest;
    manifest.epoch = epoch;
    manifest.global_step = global_step;
    std::vector<std::string> dirs;
    auto record = [&](const WrittenFile& f) { manifest.files[f.rel] = {f.size, f.xxh3_128}; };
    auto record_all = [&](const std::vector<WrittenFile>& files) {
      for (const auto& f : files) record(f);
    };
    if (model) {
      record_all(write_tensor_set(e, temp, "model", "model", "model", *model, max_shard_bytes,
                                  settings, dirs));
    }
    if (ema) {
      record_all(
          write_tensor_set(e, temp, "", "ema", "ema", *ema, max_shard_bytes, settings, dirs));
    }
    if (optimizer_tensors) {
      record_all(write_tensor_set(e, temp, "optimizer", "optimizer", "optimizer",
                                  *optimizer_tensors, max_shard_bytes, settings, dirs));
      record(write_text_file(e, temp, "optimizer/optimizer.json", *optimizer_json, settings));
    }
    if (lr_scheduler_json) {
      record(write_text_file(e, temp, "lr_scheduler.json", *lr_scheduler_json, settings));
    }
    if (sampler_json) record(write_text_file(e, temp, "sampler.json", *sampler_json, settings));
    record(write_text_file(e, temp, std::string(kRunningStatesName), running_states_json,
                           settings));
    if (settings.fsync) {
      for (const auto& d : dirs) e.sync_dir(temp / d);
    }

    phase(SavePhase::WriteManifest);
    WriteSettings manifest_settings = settings;
    manifest_settings.checksums = false;
    write_text_file(e, temp, std::string(kManifestName), manifest_to_json(manifest),
                    manifest_settings);
    if (settings.fsync) e.sync_dir(temp);

    phase(SavePhase::Commit);
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

  phase(SavePhase::Prune);
  // The checkpoint is committed: failing to tidy up is worth a warning, not a failed save.
  try {
    remove_temp_folders(e, experiment_dir);
    if (keep_n_latest > 0) prune_checkpoints(experiment_dir, keep_n_latest, &e);
  } catch (const Error& err) {
    emit_warning(warn, "pruning '" + experiment_dir.string() + "' after saving '" +
                           final_path.string() + "': " + err.message());
  }
  phase(SavePhase::Done);
  return final_path;
}

}  // namespace ckptio::checkpoint
