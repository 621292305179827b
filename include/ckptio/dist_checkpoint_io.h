// dist::CheckpointIO: the whole training state of a sharded job (model, EMA, optimizer, LR
// scheduler, sampler, running states) as one distributed checkpoint per step, every rank writing
// its own pieces, synchronously or in the background; resumed on any number of ranks.
//
// On disk, under the experiment folder, each checkpoint is a distributed checkpoint (dist.h,
// docs/distributed.md) committed by dist::save:
//
//   <exp>/epoch{E}-global_step{S}/
//     rank-0000[-k-of-n].safetensors ...   every rank's pieces
//     ckptio.distributed.json              the global index
//     ckptio.manifest.json                 every file with size and xxh3-128, written last
//
// Tensor names are the dotted keys of the state dict {"model": ..., "ema": ..., "optimizer": ...,
// "lr_scheduler": ..., "sampler": ..., "running_states": ...} flattened the way Python's
// ckptio.dist (and torch.distributed.checkpoint) flattens it: "model.<name>", "ema.<name>",
// "optimizer.<name>" (PyTorch optimizers: "optimizer.state.<param>.<key>"). Non-tensor state is
// JSON, flattened the same way (objects walked, every other value one leaf: "lr_scheduler.last_epoch",
// "optimizer.param_groups", "running_states.global_step", "running_states.extra" holding [extra]),
// and stored in the replicated U8 tensor "__ckptio_plain_data__" (format "ckptio.plain_data"): a
// leaf equal on every rank once, a leaf that differs between ranks once per rank. So a checkpoint
// saved here loads with Python's ckptio.dist.CheckpointIO, and one saved there loads here.
//
// Per-rank values on another world size: loading on the world size that saved gives each rank its
// own value. On a different world size a per-rank value does not say which rank's value a rank
// should get: load throws Error(Mismatch) naming the key (as Python does) unless
// TrainingLoadOptions::per_rank asks for rank 0's value, or to leave the key out (every saved
// rank's value is in TrainingLoadResult::per_rank either way).
//
// Collective: every rank of the communicator calls the methods save, wait (when
// the save was async), load and prune with the same arguments apart from its own items.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/checkpoint_io.h"
#include "ckptio/communicator.h"
#include "ckptio/dist.h"

namespace ckptio::dist {

// The replicated U8 tensor holding the plain (non-tensor) values, and its document's format tag.
inline constexpr std::string_view kPlainDataName = "__ckptio_plain_data__";
inline constexpr std::string_view kPlainDataFormat = "ckptio.plain_data";

// One entry of the training state ("model", "optimizer", ...) as this rank holds it.
struct ComponentState {
  // This rank's pieces; names relative to the component ("layer.weight", "state.0.exp_avg").
  std::vector<SaveItem> tensors;
  // The non-tensor state: a JSON object (hyperparameters, param_groups, a sampler's position).
  // Leaves may differ between ranks. Object keys must be non-empty and hold no '.', since the
  // dotted key must split back into the same object.
  std::string values = "{}";
};

struct TrainingState {
  std::optional<ComponentState> model;
  std::optional<ComponentState> ema;
  std::optional<ComponentState> optimizer;
  std::optional<ComponentState> lr_scheduler;
  std::optional<ComponentState> sampler;
  RunningStates running;     // equal on every rank (else stored per rank, as any value)
  std::string extra = "{}";  // free-form JSON, stored as running_states.extra
};

// What a rank loads of one component.
struct ComponentTarget {
  // Filled in place; names relative to the component, placements those of the loading ranks
  // (tensors reshard). Tensors of the component that no item asks for are not read.
  std::vector<LoadItem> tensors;
  // Rebuild the component's non-tensor state into TrainingLoadResult::values.
  bool values = true;
};

struct TrainingLoadTargets {
  std::optional<ComponentTarget> model;
  std::optional<ComponentTarget> ema;
  std::optional<ComponentTarget> optimizer;
  std::optional<ComponentTarget> lr_scheduler;
  std::optional<ComponentTarget> sampler;
};

// What a rank gets for a value saved per rank when the loading world size differs.
enum class PerRankRule : uint8_t {
  Error,  // Error(Mismatch) naming the key (the default; Python's ckptio.dist does the same)
  Rank0,  // rank 0's value
  Omit,   // left out of the rebuilt object (every rank's value is in TrainingLoadResult::per_rank)
};

struct CheckpointIOOptions {
  size_t keep_n_latest = 0;  // 0 keeps every checkpoint; else the coordinator prunes after commits
  bool async = false;        // save() returns before the files are written
  SnapshotMode snapshot = SnapshotMode::Copy;  // async saves only (see checkpoint_io.h)
  bool checksums = true;
  bool sync = true;          // fsync files and folders; off only for tests and benchmarks
  unsigned threads = 0;      // staging copy threads; 0: ckptio::default_threads()
  io::Env* env = nullptr;    // this rank's Env; nullptr: io::Env::posix()
  // Warnings (a damaged checkpoint skipped or moved aside, a failed prune); default: stderr.
  std::function<void(const std::string&)> warn;
};

struct TrainingLoadOptions {
  // A requested component absent from the checkpoint: Error(NotFound) when strict, else listed in
  // TrainingLoadResult::missing_components. A requested tensor that is absent is always
  // Error(NotFound).
  bool strict = true;
  PerRankRule per_rank = PerRankRule::Error;
  // How much "latest" checks of a candidate before loading it: Sizes (every file present with its
  // size) or Full (the coordinator also checks every file's xxh3-128; reads the whole checkpoint).
  VerifyDepth verify = VerifyDepth::Sizes;
  io::ParallelReadOptions read;
};

struct TrainingLoadResult {
  std::filesystem::path path;  // the checkpoint that was loaded
  int saved_world_size = 0;    // how many ranks saved it
  RunningStates running;
  std::string extra = "{}";
  // Component name -> its non-tensor state rebuilt as a JSON object (this rank's view), for each
  // requested component with values = true that is in the checkpoint.
  std::map<std::string, std::string> values;
  // Every value saved per rank, by dotted key -> each saved rank's value as JSON text.
  std::map<std::string, std::vector<std::string>> per_rank;
  std::vector<std::string> missing_components;
  std::vector<std::string> warnings;  // checkpoints "latest" skipped, and why
};

class CheckpointIO {
 public:
  // `comm` must outlive this object. An async save runs all its collectives on `comm` in a
  // background thread: until wait() (or the next save, or load) returns, the caller must not use
  // `comm` itself (give the checkpointer a communicator of its own, e.g. an MPI communicator over a
  // duplicate of the job's MPI_Comm, to keep training collectives running meanwhile). So `comm` is
  // used by one thread at a time, but not always by the thread that made it: under MPI that needs
  // MPI_THREAD_SERIALIZED, and MPI_THREAD_MULTIPLE when other threads call MPI during a save.
  CheckpointIO(Communicator& comm, std::filesystem::path experiment_dir,
               CheckpointIOOptions options = {});
  // Waits for a save in flight; an error nobody collected is printed to stderr.
  ~CheckpointIO();
  CheckpointIO(const CheckpointIO&) = delete;
  CheckpointIO& operator=(const CheckpointIO&) = delete;

  const std::filesystem::path& experiment_dir() const;
  int rank() const;
  int world_size() const;

  // Collective. Saves `state` as <exp>/epoch{E}-global_step{S} (E, S from state.running) and
  // returns that path. First waits for the previous save and rethrows its error. Then every rank
  // validates its items and values and the ranks agree (an invalid item or JSON anywhere is
  // Error(InvalidArgument) on every rank, nothing written); the coordinator moves a damaged folder
  // at the final name aside (or it is Error(AlreadyExists) on every rank for a committed one
  // without `replace`). Sync: returns once the checkpoint is committed (on every rank) and pruned;
  // those errors throw from save(). Async copy: returns once this rank's bytes are copied to the
  // staging pool (the caller may change its buffers right away); the agreement and everything
  // after it run in the background. Async borrow: returns at once; the buffers must stay unchanged
  // until wait(). In async mode every error, this rank's invalid items included, comes from wait()
  // (or the next save) on every rank. A failure on any rank fails every rank's save (or wait()),
  // and nothing is committed.
  std::filesystem::path save(const TrainingState& state,
                             const CheckpointSaveOptions& save_options = {});

  // Blocks until this rank's part of the save in flight is done; rethrows its error (once). Every
  // rank gets the same outcome.
  void wait();
  bool busy() const;

  // Collective. Loads "latest" (the newest committed checkpoint in commit order that the ranks can
  // load: one found damaged, or that fails with Corrupt, IoError or NotFound on any rank, is
  // skipped on every rank with a warning) or a folder path (absolute, or relative to the experiment
  // folder) into `targets`. Waits for a save in flight first. Error(NotFound) when no checkpoint
  // loads. Tensors reshard: any world size loads what any world size saved.
  [[nodiscard]] TrainingLoadResult load(std::string_view path_or_latest,
                                        const TrainingLoadTargets& targets,
                                        const TrainingLoadOptions& options = {});

  // Rank-local reads of the experiment folder (see list_checkpoints / latest_checkpoint).
  [[nodiscard]] std::vector<CheckpointEntry> list(VerifyDepth depth = VerifyDepth::Sizes) const;
  [[nodiscard]] std::optional<CheckpointEntry> latest(VerifyDepth depth = VerifyDepth::Sizes) const;

  // Collective: waits for a save in flight, then the coordinator keeps the `keep` newest committed
  // checkpoints; returns what it removed (on rank 0; empty elsewhere).
  std::vector<std::filesystem::path> prune(size_t keep);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ckptio::dist
