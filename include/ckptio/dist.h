// Distributed checkpoints: every rank of a job saves the part of each tensor it holds, in
// parallel, into one checkpoint folder; any number of ranks load any part of it back (N -> M
// resharding), and one process reads it as plain tensors. The on-disk layout is documented in
// docs/distributed.md; PyTorch's HuggingFaceStorageReader reads the per-rank files as they are.
//
// Ranks talk only through a Communicator (communicator.h): MPI, torch.distributed, threads of one
// process (make_thread_group) or none (single_process_communicator).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/async_writer.h"
#include "ckptio/communicator.h"
#include "ckptio/dtype.h"
#include "ckptio/io.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/tensor.h"

namespace ckptio::dist {

// An N-d box of a tensor: the first element's index per dimension and the extent per dimension.
struct Box {
  std::vector<int64_t> offsets;
  Shape shape;
};

enum class Placement : uint8_t {
  Replicated,  // this rank holds the whole tensor (as does every rank that lists it)
  Block,       // an N-d box (row blocks, tensor parallel, DTensor Shard placements)
  FlatRange,   // a range of the row-major flattened tensor (ZeRO partitions), maybe padded
};

// What one rank holds of one tensor. The local bytes are contiguous, row-major: the whole tensor
// (Replicated), the box (Block), or flat_length elements starting at element flat_begin of the
// flattened tensor (FlatRange); elements at or past the tensor's element count are padding: never
// written, and zeroed on load.
struct ShardedTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape global_shape;
  Placement placement = Placement::Replicated;
  Box box;                   // Block only
  uint64_t flat_begin = 0;   // FlatRange only
  uint64_t flat_length = 0;  // FlatRange only: elements in the local buffer, padding included

  static ShardedTensor replicated(std::string name, DType dtype, Shape global_shape);
  static ShardedTensor block(std::string name, DType dtype, Shape global_shape,
                             std::vector<int64_t> offsets, Shape local_shape);
  static ShardedTensor flat(std::string name, DType dtype, Shape global_shape, uint64_t begin,
                            uint64_t length);
  // The partition ZeRO (ColossalAI) and Open-Sora's model_sharding keep on rank `rank` of
  // `world`: the flattened tensor padded to a multiple of `world`, split into `world` equal parts.
  static ShardedTensor zero_partition(std::string name, DType dtype, Shape global_shape, int rank,
                                      int world);

  // Bytes of the local buffer (padding included).
  uint64_t local_nbytes() const;
};

struct SaveItem {
  ShardedTensor tensor;
  std::span<const std::byte> bytes;  // local_nbytes() bytes; unchanged until save returns
};

struct LoadItem {
  ShardedTensor tensor;        // its dtype is the checkpoint's
  std::span<std::byte> bytes;  // the local elements, in `load_as` when set; filled by load
  // Elements converted to this dtype as they are read (convert_elements, chunk by chunk: no
  // copy of the whole piece in the stored dtype). nullopt: the stored dtype, bytes as they are.
  std::optional<DType> load_as{};
};

struct SaveOptions {
  // Replace an existing checkpoint at the path (atomically); without it an existing path is
  // Error(AlreadyExists) before anything is written.
  bool replace = false;
  // fsync every file and folder; off only for tests and benchmarks.
  bool sync = true;
  // xxh3-128 of every file in the manifest (computed from memory while writing, no re-read).
  bool checksums = true;
  // Recorded in the manifest, like CheckpointIO's checkpoints.
  int64_t epoch = 0;
  int64_t global_step = 0;
  // The commit sequence number recorded in the manifest (the coordinator's value counts), which
  // orders the checkpoints of an experiment folder (see checkpoint_io.h); 0: none.
  uint64_t sequence = 0;
  io::Env* env = nullptr;  // this rank's Env; nullptr: Env::posix()
  // How this rank's files are written (backend, threads, O_DIRECT, bytes in flight), as for
  // save_safetensors (SafetensorsWriteOptions::writer); nullptr: the same defaults. Its env and
  // sync fields are ignored (the two above decide). On a disk where the page cache is the
  // bottleneck, direct_io = true writes the bulk of every file past it.
  const io::AsyncWriterOptions* writer = nullptr;
};

struct SaveResult {
  std::filesystem::path path;       // the committed checkpoint folder
  std::vector<std::string> files;   // the files this rank wrote
  uint64_t bytes_written = 0;       // by this rank (file bytes)
};

// Collective: every rank of `comm` calls it with the same `dir` and options and its own items.
//
// Each rank writes its pieces into the checkpoint's temp folder; replicated tensors are written
// once, by a rank chosen deterministically to balance bytes (every rank computes the same choice
// from its own list, so ranks must list the same replicated tensors). Then every rank agrees on
// the outcome; the coordinator (rank 0) gathers each rank's files, sizes, checksums and chunks,
// builds and validates the global index (every tensor covered exactly once, shapes and dtypes
// equal on every rank), writes it and ckptio.manifest.json last, and commits the folder (fsync,
// rename, fsync of the parent). A final agreement carries the commit's outcome, so a save that
// returns on any rank is committed, and a failure anywhere throws on every rank an Error naming
// the failing rank, with nothing committed. A rank that never arrives makes the others throw
// Error(Timeout) after the communicator's timeout. The commit also removes the temp folders that
// earlier saves of the same `dir` left when they died (docs/distributed.md, "Crash safety").
//
// Errors: InvalidArgument for malformed items (a box outside the global shape, a buffer of the
// wrong size, one name with two dtypes/shapes or placements, a sub-byte dtype not replicated),
// for ranks whose pieces do not cover a tensor exactly once; AlreadyExists; the Env's I/O errors.
SaveResult save(Communicator& comm, const std::filesystem::path& dir,
                std::span<const SaveItem> items, const SaveOptions& options = {});

// --- the global index -------------------------------------------------------------------------

inline constexpr std::string_view kIndexName = "ckptio.distributed.json";
inline constexpr std::string_view kIndexFormat = "ckptio.distributed";
inline constexpr int kIndexVersion = 1;
// An index file larger than this is refused before it is parsed.
inline constexpr uint64_t kMaxIndexBytes = uint64_t{1} << 30;

struct IndexFile {
  std::string name;  // a plain file name inside the checkpoint folder
  int rank = 0;      // the rank that wrote it
  uint64_t size = 0;
};

struct IndexChunk {
  uint32_t file = 0;   // index into GlobalIndex::files
  Box box;             // which elements
  uint64_t begin = 0;  // absolute byte range of the chunk's row-major bytes in the file
  uint64_t end = 0;
};

struct IndexTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<IndexChunk> chunks;
};

struct GlobalIndex {
  int world_size = 1;
  std::vector<IndexFile> files;
  std::vector<IndexTensor> tensors;  // sorted by name
};

std::string index_to_json(const GlobalIndex& index);
// Parses and validates (validate_index) index JSON; `source` names it in errors.
GlobalIndex parse_index(std::string_view json, std::string_view source);
// Throws Error(Corrupt) naming `source` and the tensor for anything a reader cannot trust: bad
// names, dtypes or shapes (negative, over 64 dimensions, element or byte counts that overflow), a
// chunk outside the tensor or of zero volume, a byte range past its file's size or of the wrong
// length, two chunks that overlap, elements no chunk covers. Sub-byte dtypes (F4, F6) must be one
// chunk holding the whole tensor (else Error(Unsupported)). Overlaps are found by sorting (along
// the dimension with the most distinct chunk starts), not by comparing every pair.
void validate_index(const GlobalIndex& index, std::string_view source);

// True when `dir` holds a distributed checkpoint's index.
bool is_distributed_checkpoint(const std::filesystem::path& dir, io::Env& env = io::Env::posix());

// --- reading ----------------------------------------------------------------------------------

struct LoadOptions {
  io::ParallelReadOptions read;  // threads and chunk size of the parallel reads
  io::Env* env = nullptr;        // nullptr: Env::posix()
};

struct LoadReport {
  uint64_t bytes_read = 0;
  size_t reads = 0;  // pread requests after merging contiguous runs
};

// A distributed checkpoint opened for reading: the index is read and validated; each data file is
// opened (and its size checked against the index) the first time a read needs it. Thread-safe.
class Reader {
 public:
  static Reader open(const std::filesystem::path& dir, const LoadOptions& options = {});

  const std::filesystem::path& dir() const;
  const GlobalIndex& index() const;
  // nullptr when absent.
  const IndexTensor* find(std::string_view name) const;

  // Fills each item's bytes with the elements it asks for, reading only the byte ranges of the
  // chunks that intersect it, all items' reads in one parallel batch. Error(NotFound) for an
  // unknown name, Error(Mismatch) for a dtype or global shape that differs from the checkpoint's
  // or a `load_as` convert_elements cannot convert to, Error(InvalidArgument) for a malformed item; Error(Corrupt) for a data file whose size is not
  // the index's. `threads` > 0 overrides the reader threads of the options given to open().
  LoadReport read(std::span<const LoadItem> items, unsigned threads = 0) const;
  // Opens every data file now and checks its size against the index (Error(Corrupt)), so that a
  // hostile index cannot make a caller allocate for tensors whose bytes do not exist.
  void check_files() const;
  // The whole tensor into `dst` (exactly its byte size).
  LoadReport read_tensor(std::string_view name, std::span<std::byte> dst) const;

 private:
  struct Impl;
  explicit Reader(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// Rank-local: loads what `items` ask for from the checkpoint at `dir` (saved on any number of
// ranks, in any layout). Needs no communicator: each rank reads the index and its own ranges.
LoadReport load(const std::filesystem::path& dir, std::span<const LoadItem> items,
                const LoadOptions& options = {});

// --- consolidation ----------------------------------------------------------------------------

struct ConsolidateOptions {
  uint64_t max_shard_size = 5'000'000'000;  // as save_sharded ("5GB")
  io::Env* env = nullptr;
};

struct ConsolidateReport {
  std::vector<std::string> files;  // shard files written, then the index (when sharded)
  size_t tensors = 0;
  uint64_t tensor_bytes = 0;
};

// Writes the full tensors of the distributed checkpoint `src` as a Hugging Face folder at `dst`
// (model.safetensors, or model-0000k-of-0000N.safetensors + model.safetensors.index.json, laid out
// as save_sharded lays them out). One tensor is assembled at a time, so memory stays near the
// largest tensor. Every file is written crash-safely (temp name, fsync, rename, fsync).
ConsolidateReport consolidate(const std::filesystem::path& src, const std::filesystem::path& dst,
                              const ConsolidateOptions& options = {});

}  // namespace ckptio::dist
