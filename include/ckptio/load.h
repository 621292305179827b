// load_checkpoint: load model weights from anything ckptio reads, into buffers the caller owns or
// into a name -> Tensor map.
//
// Sources (resolve_checkpoint_source decides, in this order):
//   a distributed checkpoint (dist.h): a folder holding ckptio.distributed.json, or that file;
//             its tensors read whole, whatever layout the ranks saved them in
//   CKPT/model, CKPT/ema, CKPT/optimizer: that component of the training checkpoint folder CKPT,
//             whether it is a folder or a file (ema.safetensors, ema.pt, model.pt); an optimizer
//             reads as tensors "state.<param>.<key>"
//   a file:   .safetensors; .pt / .pth / .bin (torch pickle, read by the restricted unpickler);
//             *.index.json (a sharded folder's index); other names are sniffed by their first bytes
//   a folder: model.safetensors.index.json > model.safetensors > pytorch_model.bin.index.json >
//             pytorch_model.bin > a training checkpoint folder (ckptio's, or Open-Sora/ColossalAI's
//             epochE-global_stepS: its EMA weights when present, else model/; WeightsChoice picks)
//             > the folder's only *.safetensors.index.json > its only *.safetensors file (but
//             "<base>-0000k-of-0000N.safetensors" with N > 1 alone is Error(Corrupt): a shard set
//             without its index).
// A folder that holds safetensors weights never falls back to a pickle: if the safetensors files
// are broken the load fails.
//   hf://org/name[@revision][/path]: a Hugging Face Hub source, made local by
//             SourceOptions::hub (ckptio::hub::resolver() from ckptio/hub.h, library ckptio::hub).
//             Nothing else reaches the network: a plain path that does not exist is
//             Error(NotFound), and this library (ckptio::load) has no network code at all.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptio/dtype.h"
#include "ckptio/io.h"
#include "ckptio/safetensors.h"
#include "ckptio/sharded.h"
#include "ckptio/tensor.h"

namespace ckptio {

// Which weights of a training checkpoint folder to load.
enum class WeightsChoice : uint8_t {
  Auto,   // EMA when the folder has it (ema.safetensors, ema/, ema.pt), else model/
  Model,  // model/ (or model.safetensors / model.pt in the folder)
  Ema,    // EMA only; Error(NotFound) without it
};

enum class SourceKind : uint8_t {
  SafetensorsFile,
  TorchFile,      // .pt/.pth/.bin pickle
  ShardedFolder,  // an index file (safetensors or torch .bin shards)
  TorchOptimizerFolder,  // ColossalAI's optimizer/ (pytorch_optim.bin.index.json + pickled shards)
  DcpFolder,             // PyTorch Distributed Checkpoint (.metadata + __{rank}_{k}.distcp), ckptio/dcp.h
  DistributedFolder,     // a distributed checkpoint (dist.h); path is its ckptio.distributed.json
};
std::string_view source_kind_name(SourceKind kind);

// What a file holds, decided by its whole structure and never by its name: a file whose
// safetensors header parses (and fits the file) is safetensors, whatever its first bytes; torch's
// zip archives by their local file header; legacy torch.save streams by their magic-number record
// (pickle protocol marker, then torch's 10-byte magic number); the legacy tar format by "ustar".
enum class FileFormat : uint8_t { Safetensors, TorchZip, TorchLegacy, TorchTar, Unknown };
std::string_view file_format_name(FileFormat format);
FileFormat detect_file_format(const io::ReadableFile& file);

// A Hub source made local: the file or folder in the cache, and the folder its symlinks may
// resolve into (the repo's cache folder: snapshot files are symlinks into its blobs/).
struct HubLocalSource {
  std::filesystem::path path;
  std::filesystem::path allowed_root;
};
// Turns "hf://org/name[@revision][/path]" into local files (downloading as needed) or throws.
using HubResolver = std::function<HubLocalSource(const std::string& spec, io::Env& env)>;

struct SourceOptions {
  WeightsChoice weights = WeightsChoice::Auto;
  // When false, a source that resolves to a torch pickle is Error(Unsafe) instead of being read.
  bool allow_pickle = true;
  // Dotted path of the object to load inside a torch file (empty: the whole file, flattened). A
  // path that selects a bare tensor names it by the path (by the file's stem without a path); one
  // that selects a value holding no tensor (`epoch`) is Error(InvalidArgument).
  std::string torch_key;
  // Check every zip record's CRC-32 of a torch file when it is opened (this reads the whole file).
  // Streaming readers turn it off and check the records themselves, one buffer at a time.
  bool verify_torch_crc = true;
  // See ShardedReadOptions::allowed_root.
  std::filesystem::path allowed_root;
  io::Env* env = nullptr;  // nullptr: Env::posix()
  // How an "hf://" source becomes local files: ckptio::hub::resolver() (ckptio/hub.h). Empty: an
  // hf:// source is Error(Unsupported) and no request is made.
  HubResolver hub;
};

// A path resolved to one concrete source.
struct ResolvedSource {
  SourceKind kind = SourceKind::SafetensorsFile;
  std::filesystem::path path;  // the file, or the index file of a sharded folder
  std::string how;             // why this was picked ("ema of training checkpoint", ...)
  // Where the shards' symlinks may resolve: SourceOptions::allowed_root, or for a Hub source the
  // repo's cache folder.
  std::filesystem::path allowed_root = {};
};

// The one step that turns what the user typed into a concrete source (rules at the top of this
// file). Throws Error(NotFound) listing what was looked for when nothing matches, Error(Corrupt)
// when a folder is ambiguous (several index files), Error(Unsafe) for a pickle with
// allow_pickle=false, Error(Unsupported) for an hf:// source without SourceOptions::hub.
ResolvedSource resolve_checkpoint_source(const std::filesystem::path& path,
                                         const SourceOptions& options = {});

struct SourceTensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t nbytes = 0;
};

// Any readable source behind one interface (used by load_checkpoint, convert, diff, inspect).
// Thread-safe after open(); copies share the open files.
class CheckpointReader {
 public:
  // Resolves and opens the source. Mmap readers hand out zero-copy views.
  static CheckpointReader open(const std::filesystem::path& path,
                               const SourceOptions& options = {}, ReadMode mode = ReadMode::Mmap);
  const ResolvedSource& source() const;
  // Every tensor, in the source's order (data order for one safetensors file, index order for a
  // folder, name order for a torch file). Opens every shard of a folder.
  const std::vector<SourceTensorInfo>& tensors() const;
  // The single safetensors file's "__metadata__", or a sharded index's extra metadata.
  std::optional<Metadata> metadata() const;
  // Zero-copy where the source allows (mmap'd safetensors, zip-stored torch tensors).
  Tensor tensor(std::string_view name) const;
  // Copies or converts many tensors into caller memory in parallel (see ShardedReader).
  uint64_t read_into_many(std::span<const ReadRequest> requests, int threads = 0) const;
  // A hint that `name` will not be read again soon: the pages of a memory-mapped tensor leave this
  // process's memory (they are read from the file again if needed). Streaming readers call it to
  // keep their memory bounded by one tensor.
  void release(std::string_view name) const;
  // The bytes of a tensor that is a zero-copy view of a private read-only file mapping (a torch
  // zip record read through the POSIX Env), else nullopt. A streaming reader may drop pages of
  // these bytes (madvise MADV_DONTNEED) window by window as it goes.
  std::optional<std::span<const std::byte>> mapped_bytes(std::string_view name) const;

 private:
  struct Impl;
  explicit CheckpointReader(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// A destination the caller owns: `buffer` must be exactly tensor_nbytes(dtype, shape) bytes and
// stay alive during the call.
struct LoadTarget {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::span<std::byte> buffer;
};

struct LoadOptions {
  // Any missing, unexpected or mismatched name is Error(Mismatch) listing all of them, raised
  // before any target byte is written. When false, matching tensors load and the rest is only
  // reported.
  bool strict = true;
  // Source-name prefix rewrites, applied before matching: the first pair whose `first` is a prefix
  // of the name replaces it with `second` (Open-Sora's rename_keys).
  std::vector<std::pair<std::string, std::string>> rename_keys;
  // Convert between float dtypes (F64, F32, F16, BF16, F8) when source and target differ and the
  // target holds every source value exactly (widening: F16/BF16 -> F32, F32 -> F64, F8 -> F16,
  // ...). When false, or for a pair convert_elements cannot do, a dtype difference is a mismatch.
  bool convert_dtype = true;
  // Also convert to a target that cannot hold every source value (F32 -> BF16, F64 -> F32,
  // F32 -> F8, ...), rounding to nearest even. Without it such a pair is a mismatch.
  bool allow_narrowing = false;
  // A finite source value past the target's largest finite value (it would become Inf, or NaN in
  // the F8 types without infinities) is Error(Mismatch) naming the tensor and element, raised
  // while reading (targets read before it are filled), unless this is set. Also applies to `dtype`.
  bool allow_overflow = false;
  // Without targets: convert every convertible float tensor to this dtype (owned copies). Asking
  // for a dtype is consent to narrowing; overflow is still an error unless allow_overflow.
  std::optional<DType> dtype;
  int threads = 0;  // parallel reads; 0: min(hardware threads, 8); 1: sequential
  SourceOptions source;
};

struct LoadReport {
  ResolvedSource source;
  std::vector<std::string> loaded;      // target (renamed) names that were filled
  std::vector<std::string> missing;     // targets with no source tensor
  std::vector<std::string> unexpected;  // source tensors (renamed) with no target
  std::vector<std::string> mismatched;  // "name: source BF16 [2, 3] vs target F32 [3, 2]"
  std::vector<std::string> converted;   // names whose dtype was converted
  uint64_t bytes_read = 0;              // source bytes read or mapped
  std::chrono::nanoseconds elapsed{0};
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  // One line per list, for logs: "loaded 120 tensors (1.2 GB) in 0.4 s; 2 missing: a, b".
  std::string summary() const;
};

// Fills caller-owned targets from `source`. Throws Error(InvalidArgument) for duplicate target
// names or a buffer of the wrong size, Error(InvalidArgument) when rename_keys maps two source
// names to one, Error(Mismatch) in strict mode as above, and the readers' errors annotated with
// the source path.
LoadReport load_checkpoint(const std::filesystem::path& source, std::span<const LoadTarget> targets,
                           const LoadOptions& options = {});

struct LoadedCheckpoint {
  std::map<std::string, Tensor> tensors;  // renamed names; zero-copy views where possible
  LoadReport report;                      // unexpected/missing/mismatched stay empty
};

// No target: every tensor of the source, by (renamed) name.
LoadedCheckpoint load_checkpoint(const std::filesystem::path& source,
                                 const LoadOptions& options = {});

// --- convert -----------------------------------------------------------------------------------

struct ConvertOptions {
  // Output: a path ending in ".safetensors" is one file (Error(InvalidArgument) when
  // max_shard_size is set and the tensors exceed it); anything else is a folder written by
  // save_sharded with this limit (default 5GB).
  std::optional<uint64_t> max_shard_size;
  std::optional<DType> dtype;  // convert every float tensor
  // Folder output: the base name; empty keeps the source's ("pytorch_model" becomes "model").
  std::string base_name;
  int threads = 0;
  bool sync = true;
  // Allow the output to be the input (same path, or the same file by device and inode): the new
  // file replaces it only after it has been verified. Without it that is Error(InvalidArgument).
  bool in_place = false;
  SourceOptions source;
};

struct ConvertReport {
  ResolvedSource source;
  std::filesystem::path output;
  size_t tensors = 0;
  size_t shards = 0;
  uint64_t tensor_bytes = 0;
  size_t converted = 0;
  size_t verified = 0;  // tensors read back from the output and compared with the source
  std::vector<std::string> removed_temp_files;  // stale temp files of killed converts, removed
};

// Any readable source to one safetensors file or a sharded folder. A single safetensors file
// converted without dtype change is re-written with its own metadata by the reference layout, so
// the output is what the reference writer produces for the same tensors and metadata; a torch
// file's non-tensor values go into the metadata as JSON under their dotted names.
//
// A single-file output streams: one tensor at a time is read (converted), written to a temp file
// `.<name>.tmp-convert-<pid>-<random>` (locked while written), then read back and compared with a
// fresh read of the source before the temp file is renamed into place; memory stays near the
// largest tensor plus a fixed buffer (torch zip records are CRC-checked the same way; a legacy
// torch file is read whole). Temp files of earlier converts to the same output whose process is
// gone are removed first.
ConvertReport convert_checkpoint(const std::filesystem::path& src, const std::filesystem::path& dst,
                                 const ConvertOptions& options = {});

// --- diff --------------------------------------------------------------------------------------

struct DiffOptions {
  // Float values a (from A), b (from B) are equal as numpy.isclose(a, b, rtol, atol, equal_nan)
  // says: finite values when |a - b| <= atol + rtol * |b|; an infinity only to the same infinity;
  // NaN to nothing, unless equal_nan (then to NaN). One exception to numpy: elements with the same
  // bytes are equal (a NaN equals a bit-identical NaN, so a source always equals itself). Integer
  // and other types compare exactly.
  double atol = 0.0;
  double rtol = 0.0;
  bool equal_nan = false;
  size_t max_differences = 20;  // stop listing after this many (counting continues)
  SourceOptions source;
};

struct DiffReport {
  std::vector<std::string> differences;  // the first max_differences, one line each
  size_t difference_count = 0;
  size_t compared = 0;
  bool equal() const { return difference_count == 0; }
};

// Compares names, dtypes, shapes and values of two readable sources.
DiffReport diff_checkpoints(const std::filesystem::path& a, const std::filesystem::path& b,
                            const DiffOptions& options = {});

}  // namespace ckptio
