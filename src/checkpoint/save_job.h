// One checkpoint save, from a snapshot that no longer depends on the caller's containers: the
// tensor views point at memory that stays unchanged until the job is done (the staging pool, or
// the caller's tensors in borrow and sync mode, kept alive by `keep_alive`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/catalog.h"
#include "checkpoint/tensor_file_writer.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/safetensors.h"

namespace ckptio::checkpoint {

struct SaveJob {
  io::Env* env = nullptr;
  std::filesystem::path experiment_dir;
  std::string final_name;
  int64_t epoch = 0;
  int64_t global_step = 0;
  bool replace = false;
  // The folder at the final name does not verify (`damaged_problem` says why): move it aside as
  // "<name>.damaged-<n>" and commit in its place.
  bool set_aside_damaged = false;
  std::string damaged_problem;
  WriteSettings settings;
  uint64_t max_shard_bytes = 0;
  size_t keep_n_latest = 0;
  std::function<void(const std::string&)> warn;
  SavePhaseHook on_phase;
  // Held exclusively while the job renames or deletes checkpoint folders, so that list/latest/verify
  // of the same CheckpointIO (which hold it shared) never see a half-done commit or prune.
  std::shared_mutex* catalog_mutex = nullptr;
  // What the owning CheckpointIO knows about the folder (the job adds its own checkpoint to
  // never_remove).
  PruneRules prune_rules;

  std::optional<std::vector<NamedTensor>> model;
  std::optional<std::vector<NamedTensor>> ema;
  std::optional<std::vector<NamedTensor>> optimizer_tensors;
  std::optional<std::string> optimizer_json;
  std::optional<std::string> lr_scheduler_json;
  std::optional<std::string> sampler_json;
  std::string running_states_json;
  std::vector<Tensor> keep_alive;

  // Writes, commits and prunes. Throws the first error (annotated with the checkpoint's path)
  // after removing the temp folder; the experiment folder is then as it was before.
  std::filesystem::path run();

 private:
  void phase(SavePhase p) const;
  // After the commit a throwing hook is only worth a warning.
  void phase_after_commit(SavePhase p) const;
  // Publishes the temp folder with io::commit_folder: fails on an existing checkpoint unless
  // `replace`, and moves a damaged one aside when `set_aside_damaged`.
  void commit(const std::filesystem::path& temp, const std::filesystem::path& final_path);
};

// The JSON text of running_states.json.
std::string running_states_to_json(const RunningStates& running, std::string_view extra_json);

// The JSON value of `text`; Error(InvalidArgument) naming `what` when it is not JSON.
nlohmann::json parse_json_text(std::string_view text, std::string_view what);
// `text` re-written with two-space indentation and a final newline (files a person may read).
std::string pretty_json(std::string_view text, std::string_view what);

// optimizer.json: the non-tensor state and the mapping of tensor names to (param, key).
std::string optimizer_to_json(const OptimizerState& state);

}  // namespace ckptio::checkpoint
