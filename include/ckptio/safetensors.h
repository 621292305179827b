// safetensors: a validating reader (memory map or pread) and a writer that produces the same bytes
// as the reference implementation.
//
// File layout: u64 little-endian N, N bytes of UTF-8 JSON header, then the data section. The
// header maps tensor names to {"dtype","shape","data_offsets":[begin,end)} (offsets relative to
// the data section) and may hold "__metadata__", a string-to-string object.
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

#include "ckptio/async_writer.h"
#include "ckptio/dtype.h"
#include "ckptio/io.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/tensor.h"

namespace ckptio {

// Sorted by key, so that output is deterministic.
using Metadata = std::map<std::string, std::string>;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0;  // data_offsets, relative to the start of the data section
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsLimits {
  uint64_t max_header_bytes = 100'000'000;  // the reference's MAX_HEADER_SIZE (decimal)
  uint64_t max_tensors = 10'000'000;
  int max_rank = 64;
};

struct SafetensorsHeader {
  std::optional<Metadata> metadata;  // absent when the file has no "__metadata__"
  std::vector<TensorInfo> tensors;   // in data order (sorted by offsets)
  uint64_t header_bytes = 0;         // N
  uint64_t data_start = 0;           // 8 + N
  uint64_t data_bytes = 0;           // file size - data_start
};

// Validates a whole file held in memory: every rule the reader applies, nothing read lazily.
// `source` names the file in error messages. Throws Error(Corrupt/Unsupported).
SafetensorsHeader parse_safetensors(std::span<const std::byte> file, std::string_view source,
                                    const SafetensorsLimits& limits = {});

// Validates header JSON for a file whose data section has `data_bytes` bytes.
SafetensorsHeader parse_safetensors_header(std::string_view header_json, uint64_t data_bytes,
                                           std::string_view source,
                                           const SafetensorsLimits& limits = {});

enum class ReadMode : uint8_t {
  Mmap,   // zero-copy views on a private read-only mapping (default)
  Pread,  // no views; tensors are read into memory on request (network filesystems); bulk
          // reads pick their path per chunk (io::ReadPath)
};

struct SafetensorsReadOptions {
  ReadMode mode = ReadMode::Mmap;
  io::Env* env = nullptr;  // nullptr: Env::posix()
  SafetensorsLimits limits{};
};

class SafetensorsReader {
 public:
  // Opens and fully validates the header and the file length. No tensor byte is read.
  static SafetensorsReader open(const std::filesystem::path& path,
                                const SafetensorsReadOptions& options = {});

  const std::filesystem::path& path() const;
  ReadMode mode() const;
  const SafetensorsHeader& header() const;
  const std::optional<Metadata>& metadata() const { return header().metadata; }
  const std::vector<TensorInfo>& tensors() const { return header().tensors; }
  uint64_t file_size() const;

  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  // Throws Error(NotFound) naming the file.
  const TensorInfo& info(std::string_view name) const;

  // Mmap mode: a zero-copy read-only view that keeps the mapping alive. Pread mode: an owned copy.
  Tensor tensor(std::string_view name) const;
  // Always an owned, writable heap copy.
  Tensor read_owned(std::string_view name) const;
  // Copies the tensor's bytes into caller memory; dst.size() must equal the tensor's size.
  void read_into(std::string_view name, std::span<std::byte> dst) const;
  // Every tensor, in tensors() order, as owned writable tensors sharing one heap allocation,
  // filled by parallel preads straight from the file whatever the mode (io::read_parallel).
  std::vector<Tensor> read_all_owned(const io::ParallelReadOptions& options = {}) const;
  // The open file, for readers that schedule their own parallel reads (absolute offsets are
  // header().data_start + begin).
  const io::ReadableFile& file() const;

 private:
  struct Impl;
  explicit SafetensorsReader(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

struct NamedTensor {
  std::string name;
  TensorView view;
};

// Where each tensor goes, computed before any byte is written.
struct SafetensorsLayout {
  std::string header;               // the first bytes of the file: 8-byte N, JSON, space padding
  std::vector<size_t> order;        // indices into the input, in data order
  std::vector<TensorInfo> entries;  // in data order
  uint64_t file_size = 0;
};

struct SafetensorsWriteOptions {
  // nullopt writes {"format":"pt"} (what transformers needs to accept the file). An empty map
  // writes "__metadata__":{} like the reference does for an empty dict.
  std::optional<Metadata> metadata;
  bool omit_metadata = false;  // write no "__metadata__" at all
  bool sync = true;            // fsync file and folder; off only for tests and benchmarks
  io::Env* env = nullptr;      // nullptr: Env::posix()
  // How the bytes are written (backend, threads, O_DIRECT, bytes in flight); nullptr: the
  // defaults. Its env and sync fields are ignored: the writer uses `env` above and the commit
  // (io::write_file_atomic) fsyncs the file and its folder once.
  const io::AsyncWriterOptions* writer = nullptr;
};

// The reference layout: tensors by descending dtype (reference order) then by name, compact JSON
// with "__metadata__" first and entries in data order, padded with spaces to a multiple of 8.
// Throws Error(InvalidArgument) for duplicate names, the reserved name "__metadata__", a view
// whose byte size does not match its dtype and shape, or a header over 100,000,000 bytes.
SafetensorsLayout plan_safetensors(std::span<const NamedTensor> tensors,
                                   const SafetensorsWriteOptions& options = {});

// Crash-safe write through io::write_file_atomic (temp name in the same folder, fsync, rename,
// fsync of the folder; without `sync` the same steps minus the fsyncs). The bytes go through the
// one safetensors file writer, an io::AsyncWriter that streams each tensor from its own buffer (no
// second copy; small tensors are gathered into larger writes). Replacing a file that is
// memory-mapped by a live reader is safe.
void save_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                      const SafetensorsWriteOptions& options = {});

// The same bytes in memory (tests, fuzzing, small files).
std::string serialize_safetensors(std::span<const NamedTensor> tensors,
                                  const SafetensorsWriteOptions& options = {});

}  // namespace ckptio
