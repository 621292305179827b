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

void SaveJob::sync_or_take_back(const fs::path& temp, const fs::path& final_path,
                                const fs::path& aside) {
  if (!settings.fsync) return;
  try {
    env->sync_dir(experiment_dir);
  } catch (...) {
    // The rename may not be durable and the save is reported as failed: take the new folder back
    // (so that a retry of this step does not find it in the way) and put the old one back.
    try {
      env->rename(final_path, temp);
      if (!aside.empty()) env->rename(aside, final_path);
    } catch (...) {
    }
    throw;
  }
}

// Without RENAME_EXCHANGE: the old folder goes aside, the new one comes in, the folder is fsynced,
// and only then is the old one deleted (or, when damaged, kept aside for a person). Until the new
// one is durable, every failure puts the old one back.
void SaveJob::replace_without_exchange(const fs::path& temp, const fs::path& final_path,
                                       const fs::path& aside, bool old_is_damaged) {
  io::Env& e = *env;
  e.rename(final_path, aside);
  try {
    e.rename(temp, final_path);
  } catch (...) {
    try {
      e.rename(aside, final_path);
    } catch (...) {
    }
    throw;
  }
  sync_or_take_back(temp, final_path, aside);
  if (old_is_damaged) {
    emit_warning(warn, "'" + final_path.string() + "' did not verify (" + damaged_problem +
                           "): moved it to '" + aside.filename().string() +
                           "' and saved the new checkpoint in its place");
    return;
  }
  try {
    e.remove_all(aside);
  } catch (const Error& err) {
    // Committed and durable: the old version is debris the next save or load removes.
    emit_warning(warn, "removing the replaced checkpoint '" + aside.string() + "': " +
                           err.message());
  }
}

void SaveJob::commit(const fs::path& temp, const fs::path& final_path) {
  io::Env& e = *env;
  const io::FileInfo existing = e.stat(final_path);
  if (!existing.exists) {
    e.rename(temp, final_path);
    sync_or_take_back(temp, final_path, {});
    return;
  }
  if (set_aside_damaged) {
    replace_without_exchange(temp, final_path, free_damaged_path(e, experiment_dir, final_name),
                             /*old_is_damaged=*/true);
    return;
  }
  if (!replace) {
    throw Error(ErrorCode::AlreadyExists,
                "checkpoint '" + final_path.string() + "' already exists (ask to replace it)");
  }
  // RENAME_EXCHANGE swaps the two atomically, so a reader sees the old checkpoint or the new one,
  // never neither.
  try {
    e.exchange(temp, final_path);
  } catch (const Error& err) {
    if (err.code() != ErrorCode::Unsupported) throw;
    replace_without_exchange(temp, final_path,
                             experiment_dir / replaced_folder_name(final_name),
                             /*old_is_damaged=*/false);
    return;
  }
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
  try {
    e.remove_all(temp);
  } catch (const Error& err) {
    emit_warning(warn, "removing the replaced checkpoint '" + temp.string() + "': " +
                           err.message());
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
    manifest.sequence = next_commit_sequence(e, experiment_dir);
    WriteSettings manifest_settings = settings;
    manifest_settings.checksums = false;
    write_text_file(e, temp, std::string(kManifestName), manifest_to_json(manifest),
                    manifest_settings);
    if (settings.fsync) e.sync_dir(temp);

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
  // The checkpoint is committed: failing to tidy up is worth a warning, not a failed save.
  try {
    std::unique_lock<std::shared_mutex> lock;
    if (catalog_mutex) lock = std::unique_lock(*catalog_mutex);
    remove_temp_folders(e, experiment_dir);
    recover_replaced_folders(e, experiment_dir, warn);
    if (keep_n_latest > 0) {
      PruneRules rules = prune_rules;
      rules.never_remove.push_back(final_name);
      rules.keep_up_to.reset();  // this save is newer than whatever the run resumed from
      prune_with_rules(e, experiment_dir, keep_n_latest, rules);
    }
  } catch (const Error& err) {
    emit_warning(warn, "pruning '" + experiment_dir.string() + "' after saving '" +
                           final_path.string() + "': " + err.message());
  }
  phase_after_commit(SavePhase::Done);
  return final_path;
}

}  // namespace ckptio::checkpoint
