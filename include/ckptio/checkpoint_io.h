// CheckpointIO: save and resume the whole training state (model, EMA, optimizer, LR scheduler,
// sampler, counters) as one crash-safe checkpoint folder, synchronously or in the background.
//
// On disk, under the experiment folder:
//
//   <exp>/epoch{E}-global_step{S}/
//     model/              model.safetensors, or model-0000k-of-0000N.safetensors + index
//     ema.safetensors     (or ema/ with ema-0000k-of-0000N.safetensors + index past max_shard_size)
//     optimizer/          optimizer.safetensors (tensor state named "state.<param>.<key>", sharded
//                         like model/) and optimizer.json (everything that is not a tensor)
//     lr_scheduler.json   sampler.json
//     running_states.json {"epoch","step","global_step","batch_size","actual_update_step","extra"}
//     ckptio.manifest.json  every other file with its size and xxh3-128: written last
//
// A save builds `<exp>/.epoch{E}-global_step{S}.tmp-<random>/`, fsyncs every file in it, writes and
// fsyncs the manifest, and publishes the folder with the one folder commit (io::commit_folder of
// io.h: every folder inside fsynced, rename into place, `<exp>` fsynced). A folder at a
// final name without a valid manifest is never taken for a checkpoint of ours; temp folders left by
// a crash are removed by the next successful save. Pruning happens only after a commit, renames a
// victim to a temp name before deleting it (so a crash mid-delete leaves only temp debris), and
// never removes the newest committed checkpoint nor the one the save just committed.
//
// "Newest" means last committed: each manifest records a commit sequence number (one more than the
// highest in the folder when it was written), and latest, list and pruning order by it, so a run
// resumed from an older step that saves again supersedes the checkpoints it abandoned. Manifests
// without the number (older ckptio) order before the ones with it, among themselves by step.
//
// A folder at the final name of a save that does not verify (a file missing, truncated or with a
// wrong checksum, or no manifest) is not a checkpoint: the save renames it to
// `epoch{E}-global_step{S}.damaged-<n>` with a warning and commits the new one. Such names are
// never listed, chosen as latest or pruned; they wait for a person.
//
// The experiment folder may be a symbolic link to a folder; it is followed.
//
// Open-Sora / ColossalAI checkpoint folders (no manifest; model/ with a ColossalAI index, ema.pt or
// ema.safetensors, optimizer/ and lr_scheduler/sampler pickles, running_states.json) load through
// the same load() when given by path.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ckptio/io.h"
#include "ckptio/mismatch.h"
#include "ckptio/tensor.h"

namespace ckptio {

// Values that are not tensors (optimizer hyperparameters, LR scheduler and sampler states, free-form
// extras) are JSON text: any JSON value, written as given (pretty-printed) and read back as text.
// Text that is not JSON is Error(InvalidArgument) from save().

// Name -> tensor, sorted by name. Tensors share their bytes when copied (see Tensor).
using TensorMap = std::map<std::string, Tensor>;

// An optimizer's state in the shape of Python's optimizer.state_dict(): per-parameter tensors
// keyed by parameter (PyTorch uses the parameter index, "0", "1", ...) then by state key
// ("exp_avg", "exp_avg_sq", "step", "momentum_buffer"), plus everything else as JSON.
struct OptimizerState {
  // param -> key -> tensor. Keys must not contain '.' (the file name is "state.<param>.<key>").
  std::map<std::string, TensorMap> tensors;
  // param_groups, hyperparameters, scalar step counters, non-tensor per-parameter state: JSON text.
  std::string meta = "{}";
};

// Where training resumes. Written to running_states.json with the same keys as Open-Sora.
struct RunningStates {
  int64_t epoch = 0;
  int64_t step = 0;
  int64_t global_step = 0;
  int64_t batch_size = 0;
  int64_t actual_update_step = 0;
};

// Everything one save writes; each component is optional (absent components are not written).
struct TrainingState {
  std::optional<TensorMap> model;
  std::optional<TensorMap> ema;
  std::optional<OptimizerState> optimizer;
  std::optional<std::string> lr_scheduler;  // JSON text
  std::optional<std::string> sampler;       // JSON text (e.g. ResumableSampler::state())
  RunningStates running;
  std::string extra = "{}";  // free-form JSON text, stored in running_states.json
};

enum class SnapshotMode : uint8_t {
  // save() copies the tensors into a staging pool (allocated once, reused by later saves, filled by
  // several threads) and returns; the caller may change its tensors right away.
  Copy,
  // No copy: the caller promises not to change the tensors until wait() (or the next save)
  // returns. This is the seed's "synchronize before optimizer.step()" contract.
  Borrow,
};

// What a save is doing, for progress displays and tests.
enum class SavePhase : uint8_t {
  Snapshot,      // copying into the staging pool (copy mode) in the caller's thread
  WriteFiles,    // writing and fsyncing component files in the temp folder
  WriteManifest, // writing and fsyncing ckptio.manifest.json
  Commit,        // renaming the temp folder into place and fsyncing the experiment folder
  Prune,         // removing old checkpoints and temp debris
  Done,          // the checkpoint is committed (also called after the replace of an old one)
};
std::string_view save_phase_name(SavePhase phase);

// Which save a phase report is about. With async saves, save() for step N first waits for the save
// of step N-1, whose last phases are reported while the caller is already inside save(N): a hook
// that acts on one save must look at this, not at "the save I started last".
struct SaveInfo {
  std::filesystem::path path;  // the final folder of the checkpoint
  int64_t epoch = 0;
  int64_t global_step = 0;
};

// The on_phase callback. Takes either `void(SavePhase, const SaveInfo&)` or, for hooks that do not
// care which save it is, `void(SavePhase)`.
class SavePhaseHook {
 public:
  SavePhaseHook() = default;
  SavePhaseHook(std::nullptr_t) {}  // NOLINT(google-explicit-constructor)
  template <class F>
    requires(std::invocable<F&, SavePhase, const SaveInfo&> &&
             !std::same_as<std::remove_cvref_t<F>, SavePhaseHook>)
  SavePhaseHook(F f) : fn_(std::move(f)) {}  // NOLINT(google-explicit-constructor)
  template <class F>
    requires(std::invocable<F&, SavePhase> && !std::invocable<F&, SavePhase, const SaveInfo&>)
  SavePhaseHook(F f)  // NOLINT(google-explicit-constructor)
      : fn_([g = std::move(f)](SavePhase p, const SaveInfo&) mutable { g(p); }) {}
  explicit operator bool() const { return static_cast<bool>(fn_); }
  void operator()(SavePhase phase, const SaveInfo& save) const { fn_(phase, save); }

 private:
  std::function<void(SavePhase, const SaveInfo&)> fn_;
};

struct CheckpointOptions {
  size_t keep_n_latest = 0;             // 0 keeps every checkpoint
  bool async = false;                   // save() returns before the files are written
  // Bytes per safetensors shard (a set past it is sharded); parse_size("4GB") etc. of sharded.h
  // turns the strings the CLI and Python take into bytes.
  uint64_t max_shard_size = 4'000'000'000;
  SnapshotMode snapshot = SnapshotMode::Copy;  // async saves only
  bool checksums = true;                // xxh3-128 of every file in the manifest
  bool sync = true;                     // fsync files and folders; off only for tests and benchmarks
  unsigned threads = 0;                 // staging copy threads; 0: ckptio::default_threads()
  io::Env* env = nullptr;               // nullptr: io::Env::posix()
  // Warnings (damaged checkpoint skipped, debris removed); default prints "ckptio: warning: ..." to
  // stderr.
  std::function<void(const std::string&)> warn;
  // Called from whichever thread does the work at the start of each phase, with the save it is
  // about. An exception it throws before the commit fails the save; after the commit (Prune, Done)
  // it is reported as a warning: the checkpoint is committed.
  SavePhaseHook on_phase;
};

struct CheckpointSaveOptions {
  // Replace a committed checkpoint at the same epoch/global_step: an atomic exchange of the folders
  // where the file system has RENAME_EXCHANGE; elsewhere the old folder is renamed aside, the new
  // one renamed in, the folder fsynced, and only then the old one deleted (a failure before that
  // puts the old one back; a crash in between leaves it as `.<name>.replaced-<random>`, which the
  // next CheckpointIO save or load puts back when the final name is empty). Without it, saving a
  // step whose committed checkpoint verifies is Error(AlreadyExists); one that does not verify is
  // moved aside as damaged (see above).
  bool replace = false;
};

// Where load() puts what it reads. A null pointer means "do not load this component".
// A TensorMap target that already has entries is filled in place: every entry is a writable
// destination (caller-owned memory, e.g. Tensor::borrow over a framework tensor) whose shape must
// match; the dtype is converted where ckptio can convert it exactly (F32 <-> BF16 etc.). An empty
// TensorMap target receives every tensor of the component as owned heap tensors. Optimizer tensor
// state follows the same rule per parameter map.
struct LoadTargets {
  TensorMap* model = nullptr;
  TensorMap* ema = nullptr;
  OptimizerState* optimizer = nullptr;
  std::string* lr_scheduler = nullptr;  // receives the JSON text
  std::string* sampler = nullptr;
};

struct CheckpointLoadOptions {
  // Strict: a requested component that is absent, a missing or unexpected tensor name, or a shape
  // mismatch is Error(Mismatch/NotFound) listing every problem. Non-strict: they are reported in
  // LoadResult and everything that matches is loaded.
  bool strict = true;
  // Sizes are checked before reading, and every file of a requested component is checked against
  // its xxh3-128 from the manifest as it is brought into memory (one pass over the disk; the
  // tensors are then copied from memory). A mismatch is Error(Corrupt) naming the file; "latest"
  // then falls back to the previous checkpoint with a warning. Kept for compatibility: checksums
  // are always checked, this flag changes nothing.
  bool verify_checksums = false;
  // load_checkpoint_folder only (CheckpointIO::load uses CheckpointOptions::env).
  io::Env* env = nullptr;  // nullptr: io::Env::posix()
};

// What a load read and, in the MismatchReport lists, what did not match, each name prefixed by its
// component: missing "model:layer.weight", unexpected "optimizer:state.0.exp_avg", mismatched
// "model:w shape [2, 3] in the checkpoint, [3, 2] in the target".
struct LoadResult : MismatchReport {
  std::filesystem::path path;  // the checkpoint folder that was read
  RunningStates running;
  std::string extra = "{}";  // JSON text of running_states.json's "extra"
  std::vector<std::string> missing_components;  // requested but absent ("ema", "sampler", ...)
  std::vector<std::string> warnings;
};

enum class CheckpointState : uint8_t {
  Committed,   // manifest present and the files agree with it
  Damaged,     // manifest present but a file is missing, has the wrong size or checksum
  Incomplete,  // no valid manifest: a temp folder, or a folder some other tool wrote
  Foreign,     // an Open-Sora / ColossalAI checkpoint folder (running_states.json, no manifest)
};
std::string_view checkpoint_state_name(CheckpointState state);

struct CheckpointEntry {
  std::filesystem::path path;
  std::string name;           // folder name
  int64_t epoch = 0;
  int64_t global_step = 0;
  uint64_t size_bytes = 0;    // sum of the regular files inside
  uint64_t sequence = 0;      // commit sequence number from the manifest; 0 when it has none
  CheckpointState state = CheckpointState::Incomplete;
  bool is_temp = false;       // a leftover ".<name>.tmp-<random>" folder
  std::string problem;        // why it is damaged/incomplete, naming the file
};

// How much of a checkpoint's content a check reads.
enum class VerifyDepth : uint8_t {
  Sizes,  // every file present with the size the manifest lists (reads no data)
  Full,   // also each file's xxh3-128 checksum (reads every byte)
};

// Options of the functions that look at checkpoint folders without loading them.
struct CheckpointFolderOptions {
  VerifyDepth depth = VerifyDepth::Sizes;
  io::Env* env = nullptr;  // nullptr: io::Env::posix()
  // latest_checkpoint: told which damaged newer checkpoint it skipped, naming the file.
  std::function<void(const std::string&)> warn = nullptr;
};

struct VerifyReport {
  std::filesystem::path path;
  bool ok = false;
  bool has_manifest = false;
  bool checksums_checked = false;  // false at VerifyDepth::Sizes or when the manifest has none
  uint64_t files = 0;
  uint64_t bytes = 0;
  std::vector<std::string> problems;  // each names the file: "model/model.safetensors: checksum ..."
};

// "epoch{E}-global_step{S}".
std::string checkpoint_folder_name(int64_t epoch, int64_t global_step);
// Parses a final (non-temp) checkpoint folder name; nullopt for anything else.
std::optional<std::pair<int64_t, int64_t>> parse_checkpoint_folder_name(std::string_view name);

// Every checkpoint-like folder in `experiment_dir` (final names and leftover temp folders), sorted
// oldest first in commit order: by (sequence, global_step, epoch), so final-name folders without a
// sequence (foreign, incomplete, older manifests) come first, by step; temp folders come last.
// Checks sizes; checksums too at VerifyDepth::Full.
// A missing experiment folder gives an empty list. A folder that disappears while it is being
// looked at (a concurrent prune) is left out, not reported as damaged.
[[nodiscard]] std::vector<CheckpointEntry> list_checkpoints(
    const std::filesystem::path& experiment_dir, const CheckpointFolderOptions& options = {});

// The newest committed checkpoint (last in commit order, see list_checkpoints) whose manifest checks; damaged
// newer ones are skipped and `warn` is told which file is damaged. nullopt when there is none.
[[nodiscard]] std::optional<CheckpointEntry> latest_checkpoint(
    const std::filesystem::path& experiment_dir, const CheckpointFolderOptions& options = {});

// Checks a checkpoint folder against its manifest: every listed file exists as a regular file
// inside the folder with the listed size (and checksum at VerifyDepth::Full), no unlisted file besides the
// manifest. A folder without a manifest is reported (not ok) unless it is a foreign (Open-Sora)
// checkpoint, which is checked for readability of its parts instead. Never throws for bad content;
// throws Error(NotFound) when `path` is not a folder.
[[nodiscard]] VerifyReport verify_checkpoint(const std::filesystem::path& path,
                                             const CheckpointFolderOptions& options = {});

// True when `path` is a folder that looks like a training checkpoint (ours or Open-Sora's):
// it holds ckptio.manifest.json or running_states.json.
[[nodiscard]] bool is_checkpoint_folder(const std::filesystem::path& path,
                                        const CheckpointFolderOptions& options = {});

// Removes all but the newest `keep` committed checkpoints in commit order (keep >= 1 is enforced:
// the newest committed one is never removed). Damaged, incomplete and foreign folders are left for a person to
// look at; temp folders are left too, because another process may be saving into this folder
// (CheckpointIO removes them after each of its own commits). Each victim is renamed to a temp name
// before it is deleted. Returns the removed folders.
std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& experiment_dir,
                                                     size_t keep,
                                                     const CheckpointFolderOptions& options = {});

// Reads a checkpoint folder (ours or Open-Sora's) into `targets`; see CheckpointIO::load.
[[nodiscard]] LoadResult load_checkpoint_folder(const std::filesystem::path& path,
                                                const LoadTargets& targets,
                                                const CheckpointLoadOptions& options = {});

class CheckpointIO {
 public:
  // Nothing is created until the first save.
  explicit CheckpointIO(std::filesystem::path experiment_dir, CheckpointOptions options = {});
  // Waits for a save in flight. An error nobody collected with wait() is printed to stderr (a
  // destructor cannot throw); call wait() before destruction to handle it.
  ~CheckpointIO();
  CheckpointIO(const CheckpointIO&) = delete;
  CheckpointIO& operator=(const CheckpointIO&) = delete;

  const std::filesystem::path& experiment_dir() const;
  const CheckpointOptions& options() const;

  // Saves `state` as `<exp>/epoch{running.epoch}-global_step{running.global_step}` and returns that
  // path. Error(IoError) when the background thread cannot be started (nothing is saved; the object
  // stays usable). First waits for the previous save and rethrows its error, if any (then nothing new is
  // saved). Sync: returns once the checkpoint is committed and old ones are pruned. Async copy:
  // returns once the tensors are copied to the staging pool. Async borrow: returns at once; the
  // tensors must stay unchanged until wait(). Validation errors (bad tensor, existing step without
  // `replace`) throw from save() itself. Errors of the background part surface from wait() or the
  // next save(). The returned folder exists only once the save has committed.
  std::filesystem::path save(const TrainingState& state, const CheckpointSaveOptions& save_options = {});

  // Blocks until no save is in flight; rethrows the error of the save that just finished (once).
  void wait();
  // True while a background save runs.
  bool busy() const;

  // Loads "latest" (the newest committed checkpoint whose sizes and checksums check: one whose
  // checksum fails while loading is skipped with a warning naming the file, and the previous one is
  // loaded) or a folder path (absolute, or relative to the experiment folder) into `targets`.
  // Waits for a save in flight first. Returns the running states and what did not match.
  // Error(NotFound) when "latest" finds no checkpoint. Checksums are checked before
  // anything is written into `targets`.
  [[nodiscard]] LoadResult load(std::string_view path_or_latest, const LoadTargets& targets,
                                const CheckpointLoadOptions& options = {});

  // list, latest and verify may run while a background save is in flight; they wait only while it
  // commits or prunes, so they never see a folder half renamed or half deleted.
  [[nodiscard]] std::vector<CheckpointEntry> list(VerifyDepth depth = VerifyDepth::Sizes) const;
  [[nodiscard]] std::optional<CheckpointEntry> latest(VerifyDepth depth = VerifyDepth::Sizes) const;
  // Waits for a save in flight, then prune_checkpoints(keep). (Saves prune by themselves when
  // keep_n_latest > 0, after their commit, and also remove temp folders of crashed saves.) After a
  // load, until this object commits a save, nothing at or before the loaded checkpoint in commit
  // order is removed, and checkpoints the load found damaged are neither kept nor removed.
  std::vector<std::filesystem::path> prune(size_t keep);
  [[nodiscard]] VerifyReport verify(const std::filesystem::path& path,
                                    VerifyDepth depth = VerifyDepth::Sizes) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ckptio
