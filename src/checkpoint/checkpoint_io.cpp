// CheckpointIO: snapshots the training state, runs the save job inline or on a background thread,
// and keeps at most one save in flight.
#include "ckptio/checkpoint_io.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <iostream>
#include <mutex>
#include <thread>

#include "checkpoint/catalog.h"
#include "checkpoint/save_job.h"
#include "checkpoint/staging_pool.h"
#include "ckptio/error.h"

namespace ckptio {

namespace fs = std::filesystem;
using checkpoint::SaveJob;

struct CheckpointIO::Impl {
  fs::path experiment_dir;
  CheckpointOptions options;
  io::Env* env = nullptr;
  uint64_t max_shard_bytes = 0;
  checkpoint::StagingPool pool;
  std::thread worker;
  std::exception_ptr pending_error;
  std::atomic<bool> running{false};

  void join() {
    if (worker.joinable()) worker.join();
  }
  void rethrow_pending() {
    if (pending_error) {
      std::exception_ptr e = pending_error;
      pending_error = nullptr;
      std::rethrow_exception(e);
    }
  }
  unsigned copy_threads() const {
    if (options.copy_threads > 0) return options.copy_threads;
    return std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  }
};

CheckpointIO::CheckpointIO(fs::path experiment_dir, CheckpointOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->experiment_dir = std::move(experiment_dir);
  impl_->options = std::move(options);
  impl_->env = impl_->options.env ? impl_->options.env : &io::Env::posix();
  impl_->max_shard_bytes = parse_byte_size(impl_->options.max_shard_size);
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
    size_t total = 0;
    for (auto* list : lists) {
      if (list == nullptr) continue;
      for (const auto& t : *list) {
        total += (t.view.bytes.size() + checkpoint::kStagingAlignment - 1) /
                 checkpoint::kStagingAlignment * checkpoint::kStagingAlignment;
      }
    }
    std::span<std::byte> memory = pool.reserve(total);
    std::vector<checkpoint::CopyTask> tasks;
    size_t offset = 0;
    for (auto* list : lists) {
      if (list == nullptr) continue;
      for (auto& t : *list) {
        const size_t n = t.view.bytes.size();
        std::byte* dst = memory.data() + offset;
        tasks.push_back({t.view.bytes.data(), dst, n});
        t.view.bytes = std::span<const std::byte>(dst, n);
        offset += (n + checkpoint::kStagingAlignment - 1) / checkpoint::kStagingAlignment *
                  checkpoint::kStagingAlignment;
      }
    }
    checkpoint::parallel_copy(tasks, threads);
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
  job->settings = {o.fsync, o.checksums};
  job->max_shard_bytes = im.max_shard_bytes;
  job->keep_n_latest = o.keep_n_latest;
  job->warn = o.warn;
  job->on_phase = o.on_phase;

  const fs::path final_path = im.experiment_dir / job->final_name;
  if (!save_options.replace && im.env->stat(final_path).exists) {
    throw Error(ErrorCode::AlreadyExists,
                "checkpoint '" + final_path.string() + "' already exists (ask to replace it)");
  }

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
  if (state.lr_scheduler) job->lr_scheduler_json = state.lr_scheduler->dump(2) + "\n";
  if (state.sampler) job->sampler_json = state.sampler->dump(2) + "\n";
  job->running_states_json = checkpoint::running_states_to_json(state.running, state.extra);

  if (!o.async) {
    job->keep_alive = std::move(snap.keep_alive);
    return job->run();
  }
  if (o.snapshot == SnapshotMode::Copy) {
    if (o.on_phase) o.on_phase(SavePhase::Snapshot);
    SnapshotBuilder::copy_into_pool(
        {job->model ? &*job->model : nullptr, job->ema ? &*job->ema : nullptr,
         job->optimizer_tensors ? &*job->optimizer_tensors : nullptr},
        im.pool, im.copy_threads());
  } else {
    job->keep_alive = std::move(snap.keep_alive);
  }
  im.running = true;
  im.worker = std::thread([&im, job] {
    try {
      job->run();
    } catch (...) {
      im.pending_error = std::current_exception();
    }
    im.running = false;
  });
  return final_path;
}

LoadResult CheckpointIO::load(std::string_view path_or_latest, const LoadTargets& targets,
                              const CheckpointLoadOptions& options) {
  // Reading while our own save writes would race with it; its error stays for wait()/save().
  impl_->join();
  fs::path path;
  if (path_or_latest == "latest") {
    auto entry = latest_checkpoint(impl_->experiment_dir, options.verify_checksums, impl_->env,
                                   impl_->options.warn);
    if (!entry) {
      throw Error(ErrorCode::NotFound,
                  "no committed checkpoint in '" + impl_->experiment_dir.string() + "'");
    }
    path = entry->path;
  } else {
    path = fs::path(path_or_latest);
    if (path.is_relative() && !impl_->env->stat(path).exists) path = impl_->experiment_dir / path;
  }
  return load_checkpoint_folder(path, targets, options, impl_->env);
}

std::vector<CheckpointEntry> CheckpointIO::list(bool full) const {
  return list_checkpoints(impl_->experiment_dir, full, impl_->env);
}

std::optional<CheckpointEntry> CheckpointIO::latest(bool full) const {
  return latest_checkpoint(impl_->experiment_dir, full, impl_->env, impl_->options.warn);
}

std::vector<fs::path> CheckpointIO::prune(size_t keep) {
  impl_->join();
  return prune_checkpoints(impl_->experiment_dir, keep, impl_->env);
}

VerifyReport CheckpointIO::verify(const fs::path& path, bool full) const {
  fs::path p = path;
  if (p.is_relative() && !impl_->env->stat(p).exists) p = impl_->experiment_dir / p;
  return verify_checkpoint(p, full, impl_->env);
}

}  // namespace ckptio
