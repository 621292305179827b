// Reading PyTorch `.pt` / `.pth` / `.bin` files (torch.save output) in C++, without Python and
// without any way for the file to run code.
//
// Both layouts torch.save has written since 1.0 are read: the zip archive (default since 1.6; any
// top folder name; stored records; zip64) and the legacy non-zip pickle stream. The pickle is
// interpreted by a restricted unpickler: globals come only from an allow-list of names that
// rebuild data (OrderedDict, _rebuild_tensor_v2, storage classes, torch.Size, _codecs.encode, ...);
// any other global is Error(Unsafe) naming it, and nothing is ever called. The legacy tar format
// and TorchScript archives are Error(Unsupported).
//
// The result is a Value tree (None, bool, int, float, str, bytes, list, tuple, dict with ordered
// keys of any scalar type, tensor), so whole training checkpoints load, not only flat state dicts.
// Tensors keep torch's view semantics (storage, offset, sizes, strides); tensors that share a
// storage point at the same TorchStorage object.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "ckptio/dtype.h"
#include "ckptio/io.h"
#include "ckptio/tensor.h"

namespace ckptio::pt {

// One torch storage: a flat run of `numel` elements of `dtype`. `bytes` lies in the memory map of
// the file when the layout allows it (zip, native byte order), else in an owned heap buffer;
// `owner` keeps either alive.
struct TorchStorage {
  std::string key;  // the record name ("0", "1", ...) or legacy storage key
  DType dtype = DType::U8;
  uint64_t numel = 0;
  std::span<const std::byte> bytes;  // exactly numel * itemsize bytes
  std::shared_ptr<const void> owner;
  bool zero_copy = false;  // bytes are inside the file mapping
};

// A tensor as torch describes it: a strided view into a storage. Every view read from a file has
// been checked to lie inside its storage.
struct TorchTensor {
  std::shared_ptr<const TorchStorage> storage;
  DType dtype = DType::F32;
  int64_t storage_offset = 0;  // in elements
  Shape sizes;
  std::vector<int64_t> strides;  // in elements; 0 for expanded dimensions
  bool requires_grad = false;
  bool is_parameter = false;  // saved as nn.Parameter

  uint64_t numel() const { return shape_numel(sizes); }
  uint64_t nbytes() const { return tensor_nbytes(dtype, sizes); }
  // Row-major contiguous with the standard strides (dimensions of size 1 may have any stride).
  bool is_contiguous() const;
  // True when both views read from the same storage object.
  bool shares_storage_with(const TorchTensor& other) const {
    return storage != nullptr && storage == other.storage;
  }
  // Contiguous row-major bytes: a zero-copy view into the storage when the view already is
  // contiguous (kept alive by the returned Tensor), otherwise a gathered heap copy.
  Tensor contiguous() const;
  // Always an owned, writable heap copy, contiguous.
  Tensor to_owned() const;
};

class Value;
using ValueList = std::vector<Value>;
using ValueDict = std::vector<std::pair<Value, Value>>;  // insertion order, as Python keeps it

// An immutable node of the loaded object tree. Copies share children and payloads (cheap); a
// loaded tree is at most TorchLoadOptions::max_depth high counting shared subtrees at every place
// they appear, and the walkers below refuse trees higher than kMaxTreeHeight. Python ints wider
// than 64 bits are Error(Unsupported) at load time. Python sets load as lists; torch.Size as a
// tuple; torch.device as its string ("cuda:0"); torch dtypes as their name ("torch.float32").
class Value {
 public:
  enum class Kind : uint8_t { None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict, Tensor };

  Value() = default;  // None
  static Value none() { return {}; }
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value floating(double v);
  static Value str(std::string v);
  static Value bytes(std::string v);
  // The same sharing one immutable buffer (the unpickler hands one payload to every copy).
  static Value str(std::shared_ptr<const std::string> v);
  static Value bytes(std::shared_ptr<const std::string> v);
  static Value list(ValueList items);
  static Value tuple(ValueList items);
  static Value dict(ValueDict items);
  static Value tensor(TorchTensor t);

  Kind kind() const { return kind_; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_tensor() const { return kind_ == Kind::Tensor; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_sequence() const { return kind_ == Kind::List || kind_ == Kind::Tuple; }

  // Typed accessors; each throws Error(InvalidArgument) naming the actual kind on a mismatch.
  bool as_bool() const;
  int64_t as_int() const;
  double as_float() const;              // also accepts Int
  const std::string& as_str() const;    // Str (UTF-8) or Bytes (raw)
  const ValueList& items() const;       // List or Tuple
  const ValueDict& dict_items() const;  // Dict
  const TorchTensor& as_tensor() const;

  // Dict lookup by a string key, or by an int key written in decimal ("0"). nullptr if absent or
  // not a dict.
  const Value* find(std::string_view key) const;
  // The key as a path component: str keys as is, ints in decimal, other scalars as Python's repr.
  static std::string key_to_string(const Value& key);

 private:
  using Payload = std::variant<std::monostate, bool, int64_t, double, std::shared_ptr<const std::string>,
                               std::shared_ptr<const ValueList>, std::shared_ptr<const ValueDict>,
                               std::shared_ptr<const TorchTensor>>;
  Value(Kind kind, Payload payload) : kind_(kind), payload_(std::move(payload)) {}
  Kind kind_ = Kind::None;
  Payload payload_;
};

std::string_view kind_name(Value::Kind kind);

struct TorchLoadOptions {
  io::Env* env = nullptr;  // nullptr: Env::posix()
  // Check every zip record's CRC-32 (torch does not; this is what catches flipped bits).
  bool verify_crc = true;
  // A pickle can share one object in many places (memo references), so a small file can describe
  // a tree that is huge once walked with its sharing undone, as flatten, JSON, printing and
  // convert walk it. Loading counts that expanded tree: its nodes, and its bytes (str/bytes
  // payloads, tensor views, flattened names), each once per place it appears. Past
  // `expansion_factor` * file size + the floor below, loading fails with Error(Unsafe) before
  // anything walks the tree, so every walk costs memory and time proportional to the file. (The
  // copying the unpickler does to rebuild objects is capped in proportion to the pickle too.)
  uint64_t expansion_factor = 16;
  uint64_t max_expanded_bytes = uint64_t{256} << 20;  // byte floor; also caps the excess of
                                                       // expanded (stride 0) views over storages
  uint64_t max_expanded_nodes = uint64_t{1} << 20;    // node floor
  // Height of the whole tree, a shared subtree counting at every place it appears (at most
  // kMaxTreeHeight).
  int max_depth = 512;
  // Copy every storage into heap memory (the file mapping is released when the last zero-copy
  // user goes; with this on there is none). The copy and the CRC check share one pass.
  bool owned = false;
  unsigned threads = 0;  // for the CRC/copy pass; 0: ckptio::default_threads()
};

// The walkers (flatten, value_to_json) recurse; they refuse (Error(InvalidArgument)) a tree
// higher than this, which only a tree built by hand can be.
inline constexpr int kMaxTreeHeight = 4096;

enum class TorchFormat : uint8_t { Zip, Legacy };

// A loaded file: the tree, plus what the container said about itself.
struct TorchFile {
  Value root;
  TorchFormat format = TorchFormat::Zip;
  std::string archive_prefix;  // zip top folder ("archive", "sd", ...); empty for legacy
  int version = 0;             // zip "version" record, or the legacy protocol version (1001)
  bool big_endian = false;     // the file's byte order (data is always handed out native)
  uint64_t file_size = 0;
  // Every storage the pickle referenced, in first-reference order.
  std::vector<std::shared_ptr<const TorchStorage>> storages;
};

// Loads a file: memory-maps it (through the Env), validates the container, unpickles, checks
// every tensor view. Throws Error(Corrupt) for broken bytes, Error(Unsafe) for a global outside
// the allow-list or an opcode that would build arbitrary objects, Error(Unsupported) for
// compressed records, the legacy tar format, TorchScript archives and unknown dtypes; messages
// name the file and the byte offset.
TorchFile load_torch_file(const std::filesystem::path& path, const TorchLoadOptions& options = {});

// The same on bytes in memory; `owner` keeps `bytes` alive and is shared by zero-copy storages
// (pass nullptr when the caller keeps the bytes alive for as long as the result is used).
TorchFile parse_torch_bytes(std::span<const std::byte> bytes, std::string_view source,
                            std::shared_ptr<const void> owner,
                            const TorchLoadOptions& options = {});

// True when the first bytes look like a torch file (zip local header, legacy pickle magic).
bool looks_like_torch_file(std::span<const std::byte> head);

// Picks a sub-object by a dotted path: "optimizer.state.0.exp_avg". Dict keys may themselves
// contain dots ("model.layer1.weight"): at each dict the longest key matching a prefix of the
// remaining path wins. List and tuple items are picked by decimal index. An empty path is the
// root. Throws Error(NotFound) naming the first component that did not match.
const Value& select_path(const Value& root, std::string_view dotted_path);

// One leaf of a flattened tree: a tensor or a non-container value (empty containers are leaves).
struct FlatEntry {
  std::string name;
  const Value* value = nullptr;  // points into the tree passed to flatten()
};

// Depth-first, in the tree's order; names join keys with dots, prefixed by `prefix` (if any).
// A bare tensor at the root gets the name `prefix`, or "tensor" if empty. Throws
// Error(InvalidArgument) when two leaves get the same name ({"a.b": x, "a": {"b": y}}).
std::vector<FlatEntry> flatten(const Value& root, std::string_view prefix = "");

// Only the tensors of flatten(), by name.
std::map<std::string, TorchTensor> flatten_tensors(const Value& root,
                                                   std::string_view prefix = "");

// JSON text of a non-tensor value (None -> null, tuple -> array, bytes -> {"__bytes__":"<hex>"},
// NaN/inf -> "nan"/"inf"/"-inf" strings, dict keys as key_to_string). A tensor becomes
// {"__tensor__": {"dtype","shape"}}.
std::string value_to_json(const Value& value);

// The simple entry point for loaders: the tensors under `key` (dotted path; empty = whole file),
// flattened to dotted names and made contiguous (zero-copy views of the mapping when possible).
std::map<std::string, Tensor> load_torch_state_dict(const std::filesystem::path& path,
                                                    std::string_view key = "",
                                                    const TorchLoadOptions& options = {});

// --- convert to safetensors --------------------------------------------------------------------

struct TorchConvertOptions {
  std::string key;             // dotted path of the object to convert; empty = whole file
  bool dedupe_shared = false;  // identical views of one storage written once, aliases in metadata
  bool sync = true;            // fsync the output (off only in tests)
  TorchLoadOptions load;
};

struct TorchConvertReport {
  size_t tensors_written = 0;
  size_t aliases = 0;          // names recorded as aliases (dedupe_shared)
  size_t metadata_values = 0;  // non-tensor leaves stored as JSON in the metadata
  uint64_t data_bytes = 0;     // tensor bytes in the output
};

// Metadata key holding the alias map {"alias": "written name"} as JSON when dedupe_shared merged
// anything.
inline constexpr std::string_view kAliasesMetadataKey = "__ckptio_aliases__";

// Converts the selected object to a safetensors file (crash-safe write) and, before the file is
// renamed into place, re-reads it and compares every tensor bit for bit (and every metadata
// value) with the source; throws Error(Mismatch) and leaves `dst` untouched if anything differs. Non-tensor leaves are stored as
// JSON strings in the metadata under their dotted names, next to "format": "pt".
TorchConvertReport convert_torch_to_safetensors(const std::filesystem::path& src,
                                                const std::filesystem::path& dst,
                                                const TorchConvertOptions& options = {});

}  // namespace ckptio::pt
