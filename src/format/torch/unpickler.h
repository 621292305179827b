// The restricted unpickler: interprets pickle protocols 2 to 5 as data only. Globals resolve only
// against a fixed allow-list of names that rebuild tensors and plain containers; nothing is
// looked up dynamically and nothing is called. Tensor rebuilds are checked against their storage.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "ckptio/torch_pickle.h"

namespace ckptio::pt {

// The persistent id torch writes for a storage:
// ('storage', storage_type, key, location, numel[, view_metadata]).
struct StorageRef {
  std::string key;
  DType dtype = DType::U8;
  bool untyped = false;  // torch.UntypedStorage: numel counts bytes, views pick their dtype
  std::string location;
  uint64_t numel = 0;
  // Legacy format only: a view of another storage (view_key, offset, size), else has_view false.
  bool has_view = false;
  std::string view_key;
  uint64_t view_offset = 0;
  uint64_t view_numel = 0;
};

// Returns the storage for a persistent id; called once per BINPERSID. The same key must give the
// same object (that is how shared storages are detected). Throws Error on a bad reference.
using StorageResolver = std::function<std::shared_ptr<const TorchStorage>(const StorageRef&)>;

// Absolute limits (load_torch_file derives them from the file's size). The result's tree is at
// most max_depth high, and walked with its sharing undone it has at most max_expanded_nodes nodes
// and max_expanded_bytes bytes of payloads, tensor views and flattened names. The copying done to
// rebuild objects (OrderedDict(d), set(l), dict keys, ...) is capped at 64 bytes per pickle byte
// plus 1 MiB. Past a node, byte or copy limit: Error(Unsafe); too high: Error(Corrupt).
// Which globals a pickle may name. Each list is closed: a torch.save file cannot name DCP's
// metadata classes, and a DCP `.metadata` pickle cannot name tensors, storages or OrderedDict.
enum class PickleAllowList : uint8_t {
  TorchSave,    // torch.save files: tensors, storages, containers (allow_list.cpp)
  DcpMetadata,  // torch.distributed.checkpoint `.metadata`: its dataclasses, torch.Size, dtypes,
                // layouts, memory formats, pathlib paths. Each instance loads as a dict whose
                // first item is ("__class__", "<class name>") followed by its fields;
                // TensorProperties' tuple state is the item "__state__".
};

struct UnpickleOptions {
  int max_depth = 512;
  uint64_t max_expanded_bytes = uint64_t{256} << 20;
  uint64_t max_expanded_nodes = uint64_t{1} << 20;
  PickleAllowList allow_list = PickleAllowList::TorchSave;
};

struct UnpickleResult {
  Value value;
  size_t end = 0;  // offset just past the STOP opcode
};

// Unpickles one pickle starting at `start`. `source` names the file/record in errors, whose byte
// offsets are relative to `data`. Throws Error(Unsafe) for globals outside the allow-list and for
// opcodes that build arbitrary objects (INST, OBJ, EXT*), Error(Corrupt) for malformed streams and
// out-of-bounds views, Error(Unsupported) for valid but unhandled content.
UnpickleResult unpickle(std::span<const std::byte> data, size_t start, std::string_view source,
                        const StorageResolver& resolve, const UnpickleOptions& options = {});

}  // namespace ckptio::pt
