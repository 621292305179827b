// dist::CheckpointIO: the training-state layer over dist::save / dist::load. The caller's thread
// does only what needs the caller's memory: it checks and flattens this rank's items and values
// and, for an async copy save, copies the bytes into the staging pool. Everything that talks to the
// other ranks (the agreement on the inputs, the gather of plain values, the coordinator's folder
// checks and commit number, dist::save, the pruning) runs in Impl::run: inline for a sync save, on
// one background thread for an async one, so that an async save blocks its caller for the copy
// alone. The copy-mode snapshot, the catalog (listing, damaged folders, commit order) and the
// pruning are the single-process CheckpointIO's (src/checkpoint).
#include "ckptio/dist_checkpoint_io.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <iostream>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "checkpoint/catalog.h"
#include "checkpoint/manifest.h"
#include "checkpoint/staging_pool.h"
#include "core/thread_start.h"
#include "ckptio/error.h"
#include "dist/checkpoint_io_plain.h"

namespace ckptio::dist {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Named {
  std::string_view name;
  const std::optional<ComponentState>* state;
};

// The largest plain-data document a load reads (it is JSON of scalars and small lists).
constexpr uint64_t kMaxPlainBytes = uint64_t{1} << 30;

bool retryable(const Error& e) {
  return e.code() == ErrorCode::Corrupt || e.code() == ErrorCode::IoError ||
         e.code() == ErrorCode::NotFound;
}

}  // namespace

// One save after this rank's local checks: what the collective part needs, independent of the
// caller's containers (an async copy save's items point into the staging pool).
struct SaveJob {
  fs::path final_path;
  std::string final_name;
  std::string where;                // "saving distributed checkpoint '<path>'", for messages
  std::exception_ptr local_error;   // this rank's checks failed: the first agreement fails everywhere
  std::string leaves;               // this rank's plain values, a JSON object of dotted keys
  bool replace = false;
  std::vector<SaveItem> items;
  std::string plain_doc;  // the bytes of the plain-data tensor (its SaveItem points here)
  SaveOptions options;
};

struct CheckpointIO::Impl {
  Communicator* comm = nullptr;
  fs::path experiment_dir;
  CheckpointIOOptions options;
  io::Env* env = nullptr;
  checkpoint::StagingPool pool;
  std::mutex worker_mutex;
  std::thread worker;
  std::exception_ptr pending_error;
  std::atomic<bool> running{false};
  mutable std::shared_mutex catalog_mutex;  // exclusive while the coordinator prunes
  std::optional<std::string> resumed_from;
  std::atomic<bool> committed_since_resume{false};
  std::vector<std::string> known_damaged;

  void join() {
    std::lock_guard lock(worker_mutex);
    if (worker.joinable()) worker.join();
  }
  void rethrow_pending() {
    if (pending_error) {
      std::exception_ptr e = pending_error;
      pending_error = nullptr;
      std::rethrow_exception(e);
    }
  }
  checkpoint::PruneRules prune_rules() const {
    checkpoint::PruneRules rules;
    rules.known_damaged = known_damaged;
    if (resumed_from && !committed_since_resume) rules.keep_up_to = resumed_from;
    return rules;
  }

  // The ranks agree on their inputs; the coordinator settles the final name and the commit number;
  // every rank gets every rank's plain values and adds the merged document as one more item.
  void plan(SaveJob& job) {
    std::exception_ptr error = job.local_error;
    agree(*comm, job.where + ": preparing", error);
    const std::vector<std::string> all = comm->all_gather(job.leaves);
    if (comm->rank() == 0) {
      try {
        checkpoint::recover_replaced_folders(*env, experiment_dir, options.warn);
        if (!job.replace && env->stat(job.final_path).exists) {
          const std::string problem = checkpoint::why_not_committed(*env, job.final_path);
          if (problem.empty()) {
            throw Error(ErrorCode::AlreadyExists, "checkpoint '" + job.final_path.string() +
                                                      "' already exists (ask to replace it)");
          }
          const fs::path aside = checkpoint::free_damaged_path(*env, experiment_dir, job.final_name);
          env->rename(job.final_path, aside);
          env->sync_dir(experiment_dir);
          checkpoint::emit_warning(options.warn, "moved damaged checkpoint '" +
                                                     job.final_path.string() + "' to '" +
                                                     aside.string() + "': " + problem);
        }
        job.options.sequence = checkpoint::next_commit_sequence(*env, experiment_dir);
      } catch (...) {
        error = std::current_exception();
      }
    }
    agree(*comm, job.where + ": preparing the folder", error);
    std::erase(known_damaged, job.final_name);
    job.plain_doc = detail::merge_plain(all);
    job.items.push_back(
        {ShardedTensor::replicated(std::string(kPlainDataName), DType::U8,
                                   Shape{static_cast<int64_t>(job.plain_doc.size())}),
         std::as_bytes(std::span(job.plain_doc))});
  }

  // The collective part of a save: the plan, dist::save (which commits), then the coordinator
  // tidies the experiment folder while the others wait for it, so that a load right after sees it
  // settled.
  void run(SaveJob& job) {
    plan(job);
    dist::save(*comm, job.final_path, job.items, job.options);
    committed_since_resume = true;
    if (comm->rank() == 0) {
      std::unique_lock lock(catalog_mutex);
      checkpoint::tidy_after_commit(*env, experiment_dir, job.final_name, options.keep_n_latest,
                                    prune_rules(), options.warn);
    }
    comm->barrier();
  }
};

CheckpointIO::CheckpointIO(Communicator& comm, fs::path experiment_dir, CheckpointIOOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->comm = &comm;
  impl_->experiment_dir = std::move(experiment_dir);
  impl_->options = std::move(options);
  impl_->env = impl_->options.env ? impl_->options.env : &io::Env::posix();
}

CheckpointIO::~CheckpointIO() {
  impl_->join();
  if (impl_->pending_error) {
    try {
      std::rethrow_exception(impl_->pending_error);
    } catch (const std::exception& e) {
      std::cerr << "ckptio: error: a background distributed checkpoint save failed and nobody "
                   "called wait(): "
                << e.what() << "\n";
    }
  }
}

const fs::path& CheckpointIO::experiment_dir() const { return impl_->experiment_dir; }
int CheckpointIO::rank() const { return impl_->comm->rank(); }
int CheckpointIO::world_size() const { return impl_->comm->size(); }

void CheckpointIO::wait() {
  impl_->join();
  impl_->rethrow_pending();
}

bool CheckpointIO::busy() const { return impl_->running.load(); }

fs::path CheckpointIO::save(const TrainingState& state, const CheckpointSaveOptions& save_options) {
  wait();
  Impl& im = *impl_;
  const int64_t epoch = state.running.epoch;
  const int64_t step = state.running.global_step;
  auto job = std::make_shared<SaveJob>();
  job->final_name = checkpoint_folder_name(std::max<int64_t>(epoch, 0), std::max<int64_t>(step, 0));
  job->final_path = im.experiment_dir / job->final_name;
  job->where = "saving distributed checkpoint '" + job->final_path.string() + "'";
  job->replace = save_options.replace;

  // This rank's items under their dotted names, and its plain values. A failure here is not thrown
  // yet: it goes into the first agreement, which fails the save on every rank.
  try {
    if (epoch < 0 || step < 0) {
      throw Error(ErrorCode::InvalidArgument, "epoch and global_step must not be negative");
    }
    detail::Leaves leaves;
    const Named components[] = {{"model", &state.model},
                                {"ema", &state.ema},
                                {"optimizer", &state.optimizer},
                                {"lr_scheduler", &state.lr_scheduler},
                                {"sampler", &state.sampler}};
    for (const Named& c : components) {
      if (!*c.state) continue;
      const ComponentState& cs = **c.state;
      for (const SaveItem& item : cs.tensors) {
        if (item.tensor.name.empty()) {
          throw Error(ErrorCode::InvalidArgument,
                      std::string(c.name) + ": a tensor has an empty name");
        }
        SaveItem named = item;
        named.tensor.name = std::string(c.name) + "." + item.tensor.name;
        job->items.push_back(std::move(named));
      }
      detail::flatten_values(c.name, cs.values, leaves);
      // A component with tensors needs no marker: its tensors show it is there.
      if (!cs.tensors.empty()) {
        auto it = leaves.find(std::string(c.name));
        if (it != leaves.end() && it->second.is_object() && it->second.empty()) leaves.erase(it);
      }
    }
    detail::flatten_running(state.running, state.extra, leaves);
    json mine = json::object();
    for (auto& [k, v] : leaves) mine[k] = std::move(v);
    job->leaves = mine.dump();
  } catch (...) {
    job->local_error = std::current_exception();
    job->items.clear();  // nothing is written; only the agreement runs
    job->leaves = "{}";
  }
  job->options.replace = save_options.replace;
  job->options.sync = im.options.sync;
  job->options.checksums = im.options.checksums;
  job->options.epoch = epoch;
  job->options.global_step = step;
  job->options.env = im.env;

  if (!im.options.async) {
    im.run(*job);
    return job->final_path;
  }
  // The only part of an async save that needs the caller's memory: its bytes, copied now.
  if (im.options.snapshot == SnapshotMode::Copy && !job->items.empty()) {
    std::vector<std::span<const std::byte>> sources;
    sources.reserve(job->items.size());
    for (const SaveItem& item : job->items) sources.push_back(item.bytes);
    std::vector<std::span<const std::byte>> staged;
    try {
      staged = checkpoint::stage_copies(im.pool, sources, im.options.threads);
    } catch (...) {
      // The other ranks' saves go on into the agreement: take part in it with this failure.
      job->local_error = std::current_exception();
      job->items.clear();
    }
    for (size_t i = 0; i < staged.size(); ++i) job->items[i].bytes = staged[i];
  }
  im.running = true;
  std::thread worker;
  try {
    worker = start_thread([&im, job] {
      try {
        im.run(*job);
      } catch (...) {
        im.pending_error = std::current_exception();
      }
      im.running = false;
    }, "the background save thread");
  } catch (const Error& err) {
    // The other ranks are already on their way into the save's collectives: save here instead.
    checkpoint::emit_warning(im.options.warn, err.message() + "; saving in the foreground");
    try {
      im.run(*job);
    } catch (...) {
      im.running = false;
      throw;
    }
    im.running = false;
    return job->final_path;
  }
  std::lock_guard lock(im.worker_mutex);
  im.worker = std::move(worker);
  return job->final_path;
}

namespace {

struct NamedTarget {
  std::string_view name;
  const std::optional<ComponentTarget>* target;
};

// Loads one checkpoint on this rank (no collectives).
TrainingLoadResult load_local(const fs::path& path, const TrainingLoadTargets& targets,
                              const TrainingLoadOptions& options, io::Env& env, int rank,
                              int world) {
  if (!is_distributed_checkpoint(path, env)) {
    throw Error(ErrorCode::NotFound, "'" + path.string() + "' is not a distributed checkpoint");
  }
  const Reader reader = Reader::open(path, {.read = options.read, .env = &env});
  TrainingLoadResult result;
  result.path = path;
  result.saved_world_size = reader.index().world_size;
  detail::PlainData plain;
  if (const IndexTensor* t = reader.find(kPlainDataName)) {
    if (t->dtype != DType::U8 || t->shape.size() != 1 || t->shape[0] < 0 ||
        static_cast<uint64_t>(t->shape[0]) > kMaxPlainBytes) {
      throw Error(ErrorCode::Corrupt, "'" + path.string() + "': tensor '" +
                                          std::string(kPlainDataName) +
                                          "' is not a U8 vector of a sane size");
    }
    std::string text(static_cast<size_t>(t->shape[0]), '\0');
    (void)reader.read_tensor(kPlainDataName, std::as_writable_bytes(std::span(text)));
    plain = detail::PlainData(text, path.string());
  }
  const auto has_tensors = [&](std::string_view component) {
    const std::string below = std::string(component) + ".";
    const auto& ts = reader.index().tensors;  // sorted by name
    auto it = std::lower_bound(ts.begin(), ts.end(), below,
                               [](const IndexTensor& t, const std::string& n) { return t.name < n; });
    return it != ts.end() && it->name.starts_with(below);
  };

  std::vector<LoadItem> items;
  const NamedTarget components[] = {{"model", &targets.model},
                                    {"ema", &targets.ema},
                                    {"optimizer", &targets.optimizer},
                                    {"lr_scheduler", &targets.lr_scheduler},
                                    {"sampler", &targets.sampler}};
  for (const NamedTarget& c : components) {
    if (!*c.target) continue;
    const ComponentTarget& target = **c.target;
    if (!has_tensors(c.name) && !plain.has_prefix(c.name)) {
      if (options.strict) {
        throw Error(ErrorCode::NotFound, "'" + path.string() + "' has no " + std::string(c.name));
      }
      result.missing_components.emplace_back(c.name);
      continue;
    }
    for (const LoadItem& item : target.tensors) {
      LoadItem named = item;
      named.tensor.name = std::string(c.name) + "." + item.tensor.name;
      items.push_back(std::move(named));
    }
    if (target.values) {
      result.values[std::string(c.name)] =
          plain.rebuild(c.name, rank, world, options.per_rank).dump();
    }
  }
  const auto number = [&](std::string_view key) -> int64_t {
    const json v = plain.value(key, rank, world, options.per_rank);
    return v.is_number_integer() ? v.get<int64_t>() : 0;
  };
  result.running.epoch = number("running_states.epoch");
  result.running.step = number("running_states.step");
  result.running.global_step = number("running_states.global_step");
  result.running.batch_size = number("running_states.batch_size");
  result.running.actual_update_step = number("running_states.actual_update_step");
  const json extra = plain.value("running_states.extra", rank, world, options.per_rank);
  if (extra.is_array() && extra.size() == 1) {
    result.extra = extra[0].is_null() ? "{}" : extra[0].dump();
  } else if (!extra.is_null()) {
    result.extra = extra.dump();
  }
  result.per_rank = plain.per_rank_texts();
  (void)reader.read(items);
  return result;
}

}  // namespace

TrainingLoadResult CheckpointIO::load(std::string_view path_or_latest,
                                      const TrainingLoadTargets& targets,
                                      const TrainingLoadOptions& options) {
  Impl& im = *impl_;
  Communicator& comm = *im.comm;
  im.join();  // its error stays for wait() / save()
  const bool latest = path_or_latest == "latest";

  // Every rank tries the same candidates in the same order: the coordinator's listing.
  std::vector<std::string> candidates;
  std::vector<std::string> warnings;
  if (!latest) {
    fs::path path(path_or_latest);
    if (path.is_relative() && !im.env->stat(path).exists) path = im.experiment_dir / path;
    candidates.push_back(path.string());
  } else {
    std::exception_ptr error;
    json listing = json::object();
    if (comm.rank() == 0) {
      try {
        checkpoint::recover_replaced_folders(*im.env, im.experiment_dir, im.options.warn);
        std::shared_lock lock(im.catalog_mutex);
        const auto entries = list_checkpoints(im.experiment_dir, {.env = im.env});
        json names = json::array();
        json skipped = json::array();
        for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
          if (it->is_temp || it->state == CheckpointState::Foreign) continue;
          if (it->state != CheckpointState::Committed) {
            skipped.push_back("skipping damaged checkpoint '" + it->path.string() +
                              "': " + it->problem);
            continue;
          }
          names.push_back(it->path.string());
        }
        listing = {{"names", std::move(names)}, {"warnings", std::move(skipped)}};
      } catch (...) {
        error = std::current_exception();
      }
    }
    agree(comm, "listing checkpoints in '" + im.experiment_dir.string() + "'", error);
    listing = json::parse(comm.broadcast(listing.dump(), 0));
    candidates = listing["names"].get<std::vector<std::string>>();
    warnings = listing["warnings"].get<std::vector<std::string>>();
  }

  std::string last_problem;
  for (const std::string& candidate : candidates) {
    std::exception_ptr error;
    TrainingLoadResult result;
    try {
      if (latest && options.verify == VerifyDepth::Full && comm.rank() == 0) {
        const VerifyReport report =
            verify_checkpoint(candidate, {.depth = VerifyDepth::Full, .env = im.env});
        if (!report.ok) {
          std::string problems;
          for (const auto& p : report.problems) problems += (problems.empty() ? "" : "; ") + p;
          throw Error(ErrorCode::Corrupt, problems);
        }
      }
      result = load_local(candidate, targets, options, *im.env, comm.rank(), comm.size());
    } catch (...) {
      error = std::current_exception();
    }
    try {
      agree(comm, "loading checkpoint '" + candidate + "'", error);
    } catch (const Error& e) {
      if (!latest || !retryable(e)) throw;
      warnings.push_back("skipping checkpoint '" + candidate + "': " + e.message());
      last_problem = e.message();
      const std::string name = fs::path(candidate).filename().string();
      if (std::find(im.known_damaged.begin(), im.known_damaged.end(), name) ==
          im.known_damaged.end()) {
        im.known_damaged.push_back(name);
      }
      continue;
    }
    for (const std::string& w : warnings) checkpoint::emit_warning(im.options.warn, w);
    result.warnings = std::move(warnings);
    const fs::path path(candidate);
    if (path.parent_path() == im.experiment_dir &&
        parse_checkpoint_folder_name(path.filename().string())) {
      im.resumed_from = path.filename().string();
      im.committed_since_resume = false;
    }
    return result;
  }
  for (const std::string& w : warnings) checkpoint::emit_warning(im.options.warn, w);
  throw Error(ErrorCode::NotFound,
              "no checkpoint in '" + im.experiment_dir.string() + "' could be loaded" +
                  (last_problem.empty() ? "" : " (last: " + last_problem + ")"));
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
  Impl& im = *impl_;
  im.join();
  std::vector<fs::path> removed;
  std::exception_ptr error;
  if (im.comm->rank() == 0) {
    try {
      std::unique_lock lock(im.catalog_mutex);
      removed = checkpoint::prune_with_rules(*im.env, im.experiment_dir, keep, im.prune_rules());
    } catch (...) {
      error = std::current_exception();
    }
  }
  agree(*im.comm, "pruning '" + im.experiment_dir.string() + "'", error);
  return removed;
}

}  // namespace ckptio::dist
