// Reading PyTorch Distributed Checkpoint (DCP) folders, as torch.distributed.checkpoint.save and
// its FileSystemWriter write them: `.metadata` (a pickle: which tensors, their global shapes and
// dtypes, the box each saved chunk covers, where each item lies) and `__{rank}_{k}.distcp` data
// files (each item a whole torch.save archive at an offset).
//
// `.metadata` is read by the restricted unpickler with its own allow-list: only DCP's metadata
// classes, torch.Size, torch dtypes, layouts and memory formats, and pathlib paths. Anything else
// is Error(Unsafe) and nothing is ever called. Everything the metadata says is checked before a
// byte of data is read: chunk boxes inside the global shape, chunks that neither overlap nor leave
// holes, every chunk and bytes item mapped to a data file in the folder, every item inside its
// file and large enough for its chunk (Error(Corrupt) otherwise). Each item is read alone (one
// pread of its bytes through io::Env), never the whole data file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/dtype.h"
#include "ckptio/io.h"
#include "ckptio/tensor.h"
#include "ckptio/torch_pickle.h"

namespace ckptio::dcp {

// Where one saved item lies: `length` bytes at `offset` of `file` (a name inside the folder).
struct ItemLocation {
  std::string file;
  uint64_t offset = 0;
  uint64_t length = 0;
};

// One saved piece of a tensor: the box [offsets, offsets + sizes) of the global tensor.
struct DcpChunk {
  Shape offsets;
  Shape sizes;
  ItemLocation item;
};

struct DcpTensor {
  std::string name;  // the state dict's flattened key ("model.layer.weight")
  DType dtype = DType::F32;
  Shape shape;  // global shape
  bool requires_grad = false;
  std::vector<DcpChunk> chunks;  // in the order the metadata lists them
};

// A non-tensor value (torch.save of any object: an int, a string, a dict ...).
struct DcpBytes {
  std::string name;
  ItemLocation item;
};

struct DcpMetadata {
  std::string version;        // "1.0.0" ...; empty when the metadata has none
  std::string checkpoint_id;  // StorageMeta.checkpoint_id, when saved
  std::string save_id;
  std::vector<DcpTensor> tensors;  // in the metadata's order
  std::vector<DcpBytes> bytes;
};

// Parses and validates `.metadata` bytes (everything but the data files). `source` names the file
// in errors. Error(Unsafe) for globals outside the DCP allow-list, Error(Corrupt) for structures
// that break DCP's rules, Error(Unsupported) for items saved through a transform (compression).
DcpMetadata parse_dcp_metadata(std::span<const std::byte> pickle, std::string_view source);

// True when `dir` is a folder holding a `.metadata` file.
bool is_dcp_checkpoint(const std::filesystem::path& dir, io::Env* env = nullptr);

class DcpReader {
 public:
  // Reads and validates `dir/.metadata`, then checks that every item lies inside its data file.
  static DcpReader open(const std::filesystem::path& dir, io::Env* env = nullptr);

  const std::filesystem::path& dir() const { return dir_; }
  const DcpMetadata& metadata() const { return meta_; }
  // Error(NotFound) naming the key.
  const DcpTensor& tensor(std::string_view name) const;
  const DcpBytes& bytes_item(std::string_view name) const;

  // The whole tensor, assembled from its chunks (heap memory).
  Tensor read_tensor(std::string_view name) const;
  // The box [offsets, offsets + sizes) of the tensor; reads only the chunks that meet it.
  Tensor read_box(std::string_view name, const Shape& offsets, const Shape& sizes) const;
  // The same box straight into `dst` (row-major, exactly numel(sizes) elements of `as`), each
  // chunk converted to `as` when that differs from the tensor's dtype: memory beyond `dst` stays
  // within one chunk. Error(InvalidArgument) for a box outside the tensor or a `dst` of another
  // size, Error(Mismatch) when convert_elements cannot convert to `as`.
  void read_box_into(std::string_view name, const Shape& offsets, const Shape& sizes, DType as,
                     std::span<std::byte> dst) const;
  // The value saved for a non-tensor key.
  pt::Value read_value(std::string_view name) const;
  // Reads and checks every item (dtype and shape of every chunk, every value parses).
  void verify() const;

 private:
  DcpReader(std::filesystem::path dir, io::Env& env, DcpMetadata meta)
      : dir_(std::move(dir)), env_(&env), meta_(std::move(meta)) {}
  pt::TorchFile load_item(const ItemLocation& item) const;
  // The chunk's bytes, checked against its box and the tensor's dtype.
  Tensor read_chunk(const DcpTensor& t, const DcpChunk& c) const;

  std::filesystem::path dir_;
  io::Env* env_;
  DcpMetadata meta_;
};

}  // namespace ckptio::dcp
