// Sharded safetensors folders: size-bounded shards plus a Hugging Face compatible index.
//
// On disk (base name "model"; any base name works the same way):
//   one shard:  <dir>/model.safetensors                              (no index)
//   N shards:   <dir>/model-00001-of-0000N.safetensors ...
//               <dir>/model.safetensors.index.json
//                 {"metadata": {"total_size": <tensor bytes, int>, ...}, "weight_map": {name: file}}
// The reader also accepts the ColossalAI flavour (shards "model-00001.safetensors", total_size in
// MB as a float) and "pytorch_model.bin.index.json" folders whose shards are torch pickles.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/io.h"
#include "ckptio/safetensors.h"
#include "ckptio/tensor.h"

namespace ckptio {

// --- sizes -------------------------------------------------------------------------------------

// Parses a shard size the way huggingface_hub does: a byte count ("1000000"), or a number with a
// decimal unit ("5GB" = 5*10^9, "500MB", "10KB", "1TB") or a binary one ("2GiB" = 2*2^30, "MiB",
// "KiB", "TiB"); units are case-insensitive, a fractional number is allowed before a unit
// ("1.5GB"), spaces between number and unit are ignored. Throws Error(InvalidArgument) for
// anything else, zero, or a value over 2^63.
uint64_t parse_size(std::string_view text);

inline constexpr uint64_t kDefaultMaxShardSize = 5'000'000'000;  // "5GB", huggingface_hub's default

// --- names -------------------------------------------------------------------------------------

// "model-00002-of-00005.safetensors" for (base "model", index 1, count 5). Throws
// Error(InvalidArgument) when count > 99999.
std::string shard_file_name(std::string_view base_name, size_t index, size_t count);
// "model.safetensors"
std::string single_file_name(std::string_view base_name);
// "model.safetensors.index.json"
std::string index_file_name(std::string_view base_name);

// --- planning ----------------------------------------------------------------------------------

struct ShardPlan {
  struct Shard {
    std::string file_name;
    std::vector<size_t> members;  // indices into the input, in input order
    uint64_t data_bytes = 0;      // sum of member tensor bytes
  };
  std::vector<Shard> shards;  // empty when there is no tensor at all
  uint64_t total_size = 0;    // sum of all tensor bytes: the index's "total_size"
  bool sharded() const { return shards.size() > 1; }
};

// Greedy in input order, like huggingface_hub: a tensor goes into the current shard unless that
// would push the shard's tensor bytes past `max_shard_size` and the shard is not empty; a tensor
// larger than the limit therefore sits alone in its shard. Zero tensors give zero shards (the
// writer still writes one empty file). Names come from the base name: one shard gets
// single_file_name(), several get shard_file_name(). Throws Error(InvalidArgument) for a zero
// limit, an invalid base name (empty, '/', leading '.'), or duplicate tensor names.
ShardPlan plan_shards(std::span<const NamedTensor> tensors, uint64_t max_shard_size,
                      std::string_view base_name = "model");

// --- writing -----------------------------------------------------------------------------------

struct ShardedWriteOptions {
  uint64_t max_shard_size = kDefaultMaxShardSize;
  std::string base_name = "model";
  // Sharded: extra entries of the index's "metadata" (next to "total_size", which is reserved and
  // rejected here). Single file: the file's "__metadata__" next to "format": "pt".
  Metadata metadata;
  // Threads of the one safetensors writer (an io::AsyncWriter) writing shards and chunks of large
  // tensors at once; 0: ckptio::default_threads(). 1 writes sequentially.
  int threads = 0;
  bool sync = true;        // fsync every file and the folder; off only for tests and benchmarks
  io::Env* env = nullptr;  // nullptr: Env::posix()
};

struct ShardedWriteResult {
  struct File {
    std::string name;  // relative to the folder
    uint64_t size = 0;
  };
  std::vector<File> shards;          // in shard order
  std::optional<File> index;         // present when sharded
  std::vector<std::string> removed;  // stale files of an earlier save that were deleted
  uint64_t total_size = 0;           // tensor bytes
};

// Writes `tensors` into `dir` (created if missing) as planned by plan_shards. Every shard file goes
// through a temp name and is fsynced; the index is written last (io::write_file_atomic), and only
// then are files of an earlier save with the same base name that the new save does not name (older shards,
// an index when the new save is a single file, a single file when it is sharded, temp files left
// by a crash) removed. When a new shard name collides with a shard of the previous save, the old
// index is removed before the new shards are renamed into place, so a reader sees the old
// complete set, no index (an error), or the new complete set, never a mix. Each shard file holds
// "__metadata__": {"format": "pt"}. Throws Error as plan_shards does, and the I/O errors of the
// Env; on failure no new index is written and temp files are removed.
ShardedWriteResult save_sharded(const std::filesystem::path& dir,
                                std::span<const NamedTensor> tensors,
                                const ShardedWriteOptions& options = {});

// The index JSON for a plan, as save_sharded and CheckpointIO write it: indent 2, keys sorted,
// non-ASCII escaped as \uXXXX, trailing newline: byte for byte what transformers'
// save_pretrained writes (json.dumps(index, indent=2, sort_keys=True) + "\n", ensure_ascii
// being Python's default).
std::string render_shard_index(const ShardPlan& plan, std::span<const NamedTensor> tensors,
                               const Metadata& extra_metadata = {});

// --- reading -----------------------------------------------------------------------------------

enum class IndexFlavour : uint8_t {
  HuggingFace,  // total_size in bytes (int), shards "<base>-00001-of-0000N.safetensors"
  ColossalAI,   // total_size in MB (float), shards "<base>-00001.safetensors"
  TorchBin,     // "pytorch_model.bin.index.json": shards are torch pickles (.bin)
};
std::string_view flavour_name(IndexFlavour flavour);

struct ShardIndex {
  std::filesystem::path dir;
  std::string index_name;  // file name of the index inside dir
  IndexFlavour flavour = IndexFlavour::HuggingFace;
  // "total_size" converted to bytes (MB * 2^20 for ColossalAI); nullopt when absent.
  std::optional<double> total_size_bytes;
  // The other "metadata" entries: strings as they are, other JSON values as compact JSON text.
  Metadata metadata;
  std::vector<std::string> shard_files;  // distinct file names, in order of first appearance
  // name -> index into shard_files, in the index's key order.
  std::vector<std::pair<std::string, size_t>> weight_map;
};

// Parses and checks index JSON: a "weight_map" object of non-empty names to strings; a name
// listed twice; shard paths that are absolute, contain "..", ".", empty components or a
// backslash; two shard names that differ only in case; and a shard suffix that does not match the
// flavour (a .bin under a safetensors index or the reverse) are Error(Corrupt) naming `source`.
// `index_name` decides TorchBin (".bin.index.json"); the rest is told apart by total_size's type
// and the shard names. Nothing on disk is touched.
ShardIndex parse_shard_index(std::string_view json, const std::filesystem::path& dir,
                             std::string_view index_name);

struct ShardedReadOptions {
  // Mmap: tensor() hands out zero-copy views; Pread: no mapping, reads into memory on request.
  ReadMode mode = ReadMode::Mmap;
  // Symlinked shards must resolve inside this folder; empty means the index's folder. (A Hub
  // cache snapshot links into ../../blobs, so its caller passes the repo's cache folder.)
  std::filesystem::path allowed_root;
  // Threads for read_into_many; 0: ckptio::default_threads().
  int threads = 0;
  io::Env* env = nullptr;  // nullptr: Env::posix()
};

struct ShardedTensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t nbytes = 0;
  size_t shard = 0;  // index into index().shard_files
};

// A destination for read_into_many: the tensor `name` is copied (or converted) into `dst`.
struct ReadRequest {
  std::string name;
  DType dst_dtype = DType::F32;  // != the stored dtype: converted with convert_elements
  std::span<std::byte> dst;      // exactly numel * size of dst_dtype
};

// A sharded folder opened for reading. Opening reads and checks the index and checks that every
// shard exists, is a regular file (or a symlink resolving inside allowed_root) and stays inside
// the folder; no shard is opened yet. A shard is opened (header parsed and validated) on first
// use, and then must hold exactly the tensors the index assigns to it: missing names and names the
// index assigns elsewhere or not at all are Error(Corrupt) naming the index and the shard.
// Thread-safe after open(). Copies share the opened shards.
class ShardedReader {
 public:
  // `path` is an index file, or a folder holding exactly one "*.index.json" (else
  // Error(NotFound) / Error(Corrupt) when there are several).
  static ShardedReader open(const std::filesystem::path& path,
                            const ShardedReadOptions& options = {});

  const ShardIndex& index() const;
  std::filesystem::path shard_path(size_t shard) const;
  size_t tensor_count() const;
  bool contains(std::string_view name) const;

  // Opens every shard (in parallel) and checks it against the index. Returns every tensor in
  // index order. Throws the first inconsistency.
  std::vector<ShardedTensorInfo> tensors() const;
  // Opens only the tensor's shard. Error(NotFound) for a name the index does not list.
  ShardedTensorInfo info(std::string_view name) const;

  // A zero-copy view (Mmap) or an owned copy (Pread); torch shards give their contiguous tensor.
  Tensor tensor(std::string_view name) const;
  void read_into(std::string_view name, std::span<std::byte> dst) const;
  // Reads many tensors at once: the work is split into chunks of at most 64 MiB, read with pread
  // straight into the destinations by `threads` threads (0: options.threads). Returns bytes read.
  uint64_t read_into_many(std::span<const ReadRequest> requests, int threads = 0) const;

  // Safetensors headers of the opened shards (nullptr for torch shards); opens the shard.
  const SafetensorsHeader* shard_header(size_t shard) const;
  uint64_t shard_file_size(size_t shard) const;  // opens the shard

 private:
  struct Impl;
  explicit ShardedReader(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// The full check `ckptio verify DIR` runs: everything the reader checks, every shard opened and
// validated, plus warnings that do not stop a load: a total_size that disagrees with the shards'
// tensor bytes (beyond 1 MB for the ColossalAI float), and files in the folder that look like
// shards of the same base name but are not referenced. Throws on the first error.
struct ShardedVerifyReport {
  struct Shard {
    std::string file;
    uint64_t file_size = 0;
    uint64_t tensor_bytes = 0;
    size_t tensors = 0;
  };
  IndexFlavour flavour = IndexFlavour::HuggingFace;
  std::vector<Shard> shards;
  uint64_t tensor_bytes = 0;
  uint64_t file_bytes = 0;
  size_t tensors = 0;
  std::vector<std::string> warnings;
};
[[nodiscard]] ShardedVerifyReport verify_sharded(const std::filesystem::path& path,
                                                 const ShardedReadOptions& options = {});

}  // namespace ckptio
