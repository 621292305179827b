// CheckpointIO: snapshots the training state, runs the save job inline or on a background thread,
// and keeps at most one save in flight.
#include "ckptio/checkpoint_io.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <iostream>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "checkpoint/catalog.h"
#include "checkpoint/manifest.h"
#include "checkpoint/save_job.h"
#include "checkpoint/staging_pool.h"
#include "core/thread_start.h"
#include "ckptio/error.h"
#include "ckptio/sharded.h"

namespace ckptio {

namespace fs = std::filesystem;
using checkpoint::SaveJob;

struct CheckpointIO::Impl {
  fs::path experiment_dir;
  CheckpointOptions options;
  io::Env* env = nullptr;
  uint64_t max_shard_bytes = 0;
  checkpoint::StagingPool pool;
  std::mutex worker_mutex;  // guards `worker`: list() may run on another thread than save()
  std::thread worker;
  std::exception_ptr pending_error;
  std::atomic<bool> running{false};
  // Held exclusively by a save while it renames or deletes folders; list/latest/verify hold it
  // shared.
  mutable std::shared_mutex catalog_mutex;
  // The checkpoint this object loaded from its experiment folder, and whether a save committed
  // since (pruning spares it and everything older until then).
  std::optional<std::string> resumed_from;
  std::atomic<bool> committed_since_resume{false};
  // Checkpoints whose checksum failed while loading: not kept in place of good ones by pruning.
  std::vector<std::string> known_damaged;

  void join() {
    std::lock_guard lock(worker_mutex);
    if (worker.joinable()) worker.join();
  }
  checkpoint::PruneRules prune_rules() const {
    checkpoint::PruneRules rules;
    rules.known_damaged = known_damaged;
    if (resumed_from && !committed_since_resume) rules.keep_up_to = resumed_from;
    return rules;
  }
  void loaded(const fs::path& path) {
    if (path.parent_path() == experiment_dir &&
        parse_checkpoint_folder_name(path.filename().string())) {
      resumed_from = path.filename().string();
      committed_since_resume = false;
    }
  }
  void rethrow_pending() {
    if (pending_error) {
      std::exception_ptr e = pending_error;
      pending_error = nullptr;
      std::rethrow_exception(e);
    }
  }
};

CheckpointIO::CheckpointIO(fs::path experiment_dir, CheckpointOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->experiment_dir = std::move(experiment_dir);
  impl_->options = std::move(options);
  impl_->env = impl_->options.env ? impl_->options.env : &io::Env::posix();
  impl_->max_shard_bytes = impl_->options.max_shard_size;
  if (impl_->max_shard_bytes == 0) {
    throw Error(ErrorCode::InvalidArgument, "max_shard_size must be more than 0 bytes");
  }
}

CheckpointIO::~CheckpointIO() {
  impl_->join();
  if (impl_->pending_error) {
    try {
      std::rethrow_exception(impl_->pending_error);
    } catch (const std::exception& e) {
      std::cerr << "ckptio: error: a background checkpoint save failed and nobody called wait(): "
                << e.what() << "\n";
    }
  }
}

const fs::path& CheckpointIO::experiment_dir() const { return impl_->experiment_dir; }
const CheckpointOptions& CheckpointIO::options() const { return impl_->options; }

void CheckpointIO::wait() {
  impl_->join();
  impl_->rethrow_pending();
}

bool CheckpointIO::busy() const { return impl_->running.load(); }

static void check_tensor_names(const TensorMap& tensors, std::string_view component) {
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__") {
      throw Error(ErrorCode::InvalidArgument,
                  std::string(component) + ": tensor name \"" + name + "\" is not allowed");
    }
    (void)tensor;
  }
}

namespace {

// Collects the tensors of a save in file order, then points their views either at the caller's
// memory or at the staging pool.
struct SnapshotBuilder {
  std::vector<Tensor> keep_alive;

  std::vector<NamedTensor> add_map(const TensorMap& tensors) {
    std::vector<NamedTensor> out;
    out.reserve(tensors.size());
    for (const auto& [name, tensor] : tensors) {
      out.push_back({name, tensor.view()});
      keep_alive.push_back(tensor);
    }
    return out;
  }

  // Moves the bytes of every view in `lists` into `pool` and repoints the views.
  static void copy_into_pool(std::initializer_list<std::vector<NamedTensor>*> lists,
                             checkpoint::StagingPool& pool, unsigned threads) {
    std::vector<std::span<const std::byte>> sources;
    for (auto* list : lists) {
      if (list == nullptr) continue;
      for (const auto& t : *list) sources.push_back(t.view.bytes);
    }
    const auto staged = checkpoint::stage_copies(pool, sources, threads);
    size_t i = 0;
    for (auto* list : lists) {
      if (list == nullptr) continue;
      for (auto& t : *list) t.view.bytes = staged[i++];
    }
  }
};

}  // namespace

fs::path CheckpointIO::save(const TrainingState& state, const CheckpointSaveOptions& save_options) {
  // At most one save in flight; its error belongs to this caller now.
  wait();
  Impl& im = *impl_;
  const CheckpointOptions& o = im.options;

  auto job = std::make_shared<SaveJob>();
  job->env = im.env;
  job->experiment_dir = im.experiment_dir;
  job->epoch = state.running.epoch;
  job->global_step = state.running.global_step;
  if (job->epoch < 0 || job->global_step < 0) {
    throw Error(ErrorCode::InvalidArgument, "epoch and global_step must not be negative");
  }
  job->final_name = checkpoint_folder_name(job->epoch, job->global_step);
  job->replace = save_options.replace;
  job->settings = {o.sync, o.checksums};
  job->max_shard_bytes = im.max_shard_bytes;
  job->keep_n_latest = o.keep_n_latest;
  job->warn = o.warn;
  job->on_phase = o.on_phase;
  job->catalog_mutex = &im.catalog_mutex;

  const fs::path final_path = im.experiment_dir / job->final_name;
  checkpoint::recover_replaced_folders(*im.env, im.experiment_dir, o.warn);
  if (!save_options.replace && im.env->stat(final_path).exists) {
    // A folder there that does not verify is not a checkpoint: the save moves it aside.
    std::string problem = checkpoint::why_not_committed(*im.env, final_path);
    if (problem.empty()) {
      throw Error(ErrorCode::AlreadyExists,
                  "checkpoint '" + final_path.string() + "' already exists (ask to replace it)");
    }
    job->set_aside_damaged = true;
    job->damaged_problem = problem;
  }
  // The folder at this name will be the new checkpoint.
  std::erase(im.known_damaged, job->final_name);
  job->prune_rules = im.prune_rules();

  SnapshotBuilder snap;
  if (state.model) {
    check_tensor_names(*state.model, "model");
    job->model = snap.add_map(*state.model);
  }
  if (state.ema) {
    check_tensor_names(*state.ema, "ema");
    job->ema = snap.add_map(*state.ema);
  }
  if (state.optimizer) {
    TensorMap flat;
    for (const auto& [param, tensors] : state.optimizer->tensors) {
      if (param.empty()) {
        throw Error(ErrorCode::InvalidArgument, "optimizer: empty parameter key");
      }
      for (const auto& [key, tensor] : tensors) {
        if (key.empty()) {
          throw Error(ErrorCode::InvalidArgument,
                      "optimizer: empty state key for parameter \"" + param + "\"");
        }
        auto [it, inserted] =
            flat.emplace(checkpoint::optimizer_tensor_name(param, key), tensor);
        if (!inserted) {
          throw Error(ErrorCode::InvalidArgument,
                      "optimizer: two state tensors are both named \"" + it->first + "\"");
        }
      }
    }
    job->optimizer_tensors = snap.add_map(flat);
    job->optimizer_json = checkpoint::optimizer_to_json(*state.optimizer);
  }
  if (state.lr_scheduler) {
    job->lr_scheduler_json = checkpoint::pretty_json(*state.lr_scheduler, "lr_scheduler");
  }
  if (state.sampler) job->sampler_json = checkpoint::pretty_json(*state.sampler, "sampler");
  job->running_states_json = checkpoint::running_states_to_json(state.running, state.extra);

  if (!o.async) {
    job->keep_alive = std::move(snap.keep_alive);
    fs::path done = job->run();
    im.committed_since_resume = true;
    return done;
  }
  if (o.snapshot == SnapshotMode::Copy) {
    if (o.on_phase) {
      o.on_phase(SavePhase::Snapshot, SaveInfo{final_path, job->epoch, job->global_step});
    }
    SnapshotBuilder::copy_into_pool(
        {job->model ? &*job->model : nullptr, job->ema ? &*job->ema : nullptr,
         job->optimizer_tensors ? &*job->optimizer_tensors : nullptr},
        im.pool, im.options.threads);
  } else {
    job->keep_alive = std::move(snap.keep_alive);
  }
  im.running = true;
  std::thread worker;
  try {
    worker = start_thread([&im, job] {
      try {
        job->run();
        im.committed_since_resume = true;
      } catch (...) {
        im.pending_error = std::current_exception();
      }
      im.running = false;
    }, "the background save thread");
  } catch (const Error& err) {
    im.running = false;
    throw err.annotate("saving checkpoint '" + final_path.string() + "' in the background");
  }
  std::lock_guard lock(im.worker_mutex);
  im.worker = std::move(worker);
  return final_path;
}

namespace {

// The load options with this CheckpointIO's Env, which wins over the options' own.
CheckpointLoadOptions with_env(CheckpointLoadOptions options, io::Env* env) {
  options.env = env;
  return options;
}

}  // namespace

LoadResult CheckpointIO::load(std::string_view path_or_latest, const LoadTargets& targets,
                              const CheckpointLoadOptions& options) {
  // Reading while our own save writes would race with it; its error stays for wait()/save().
  Impl& im = *impl_;
  im.join();
  checkpoint::recover_replaced_folders(*im.env, im.experiment_dir, im.options.warn);
  if (path_or_latest != "latest") {
    fs::path path = fs::path(path_or_latest);
    if (path.is_relative() && !im.env->stat(path).exists) path = im.experiment_dir / path;
    LoadResult result = load_checkpoint_folder(path, targets, with_env(options, im.env));
    im.loaded(path);
    return result;
  }
  // Newest first in commit order; one that turns out damaged while loading gives way to the
  // previous one.
  const std::vector<CheckpointEntry> entries = list_checkpoints(im.experiment_dir, {.env = im.env});
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->is_temp || it->state == CheckpointState::Foreign) continue;
    if (it->state != CheckpointState::Committed) {
      checkpoint::emit_warning(im.options.warn, "skipping damaged checkpoint '" +
                                                    it->path.string() + "': " + it->problem);
      continue;
    }
    try {
      LoadResult result = load_checkpoint_folder(it->path, targets, with_env(options, im.env));
      im.loaded(it->path);
      return result;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::Corrupt) throw;
      checkpoint::emit_warning(im.options.warn, "skipping damaged checkpoint '" +
                                                    it->path.string() + "': " + e.message());
      if (std::find(im.known_damaged.begin(), im.known_damaged.end(), it->name) ==
          im.known_damaged.end()) {
        im.known_damaged.push_back(it->name);
      }
    }
  }
  throw Error(ErrorCode::NotFound,
              "no committed checkpoint in '" + im.experiment_dir.string() + "'");
}

std::vector<CheckpointEntry> CheckpointIO::list(VerifyDepth depth) const {
  std::shared_lock lock(impl_->catalog_mutex);
  return list_checkpoints(impl_->experiment_dir, {.depth = depth, .env = impl_->env});
}

std::optional<CheckpointEntry> CheckpointIO::latest(VerifyDepth depth) const {
  std::shared_lock lock(impl_->catalog_mutex);
  return latest_checkpoint(impl_->experiment_dir,
                           {.depth = depth, .env = impl_->env, .warn = impl_->options.warn});
}

std::vector<fs::path> CheckpointIO::prune(size_t keep) {
  impl_->join();
  return checkpoint::prune_with_rules(*impl_->env, impl_->experiment_dir, keep,
                                      impl_->prune_rules());
}

VerifyReport CheckpointIO::verify(const fs::path& path, VerifyDepth depth) const {
  std::shared_lock lock(impl_->catalog_mutex);
  fs::path p = path;
  if (p.is_relative() && !impl_->env->stat(p).exists) p = impl_->experiment_dir / p;
  return verify_checkpoint(p, {.depth = depth, .env = impl_->env});
}

}  // namespace ckptio
