// The objects a pickle builds, while it runs: an arena of small records addressed by index (so
// memo references, mutation after memoisation and cycles cost nothing and cannot leak), the
// payloads they share, and the budget that caps what rebuilding objects copies. Every error names
// the source and the byte offset of the opcode being run.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"
#include "format/torch/unpickler.h"

namespace ckptio::pt::pickle {

enum class K : uint8_t { None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict, Set, Tensor, Storage, Global };

// Allow-listed globals (allow_list.cpp has the names). Only these resolve; each is a data
// constructor.
enum class G : uint8_t {
  OrderedDict,
  Counter,
  RebuildTensor,
  RebuildTensorV2,
  RebuildTensorV3,
  RebuildParameter,
  RebuildParameterWithState,
  RebuildFromTypeV2,
  Parameter,
  TensorType,
  Size,
  Device,
  CodecsEncode,
  ByteArray,
  Set,
  FrozenSet,
  StorageType,  // torch.FloatStorage & co; DType in the global record
  DTypeObj,     // torch.float32 & co
  // PickleAllowList::DcpMetadata only:
  DcpClass,           // a DCP metadata dataclass; index into dcp_class_names() in the record
  PathClass,          // pathlib.PosixPath & co: loads as its string
  GetLayout,          // torch.serialization._get_layout("torch.strided"): the string
  MemFormatEncoding,  // DCP's _MEM_FORMAT_ENCODING(n): the int
};

// The DCP metadata classes by index (allow_list.cpp); index 0 is unused (a plain dict).
const std::vector<std::string>& dcp_class_names();
// The key naming a DCP object's class in its dict; a pickle cannot set it (set_item refuses it).
inline constexpr std::string_view kClassKey = "__class__";

struct Obj {
  K kind = K::None;
  bool flag = false;  // Bool value; StorageType: untyped
  int64_t i = 0;      // Int value; Global: G id
  double f = 0;
  uint32_t ref = 0;  // index into the per-kind pool; Global: DType
};

// What one dict entry costs in the arena: the pair, the index node, its key text.
constexpr uint64_t kDictEntryBytes = 64;
constexpr uint64_t kCopyPerPickleByte = 64;
constexpr uint64_t kCopyFloor = uint64_t{1} << 20;

struct DictObj {
  uint32_t cls = 0;  // a DCP object (index into dcp_class_names()), else 0
  std::vector<std::pair<uint32_t, uint32_t>> items;
  std::unordered_map<std::string, size_t> index;  // canonical key -> position in items
};

// The arena and its helpers; ObjectBuilder (allow_list.h) and the opcode machine build on it.
class PickleObjects {
 protected:
  PickleObjects(std::string_view source, uint64_t pickle_size, const UnpickleOptions& options)
      : source_(source), pickle_size_(pickle_size), options_(options) {}

  [[noreturn]] void fail(ErrorCode code, const std::string& msg) const {
    throw Error(code, std::string(source_) + ": pickle byte " + std::to_string(op_pos_) + ": " + msg);
  }

  // --- arena ---
  uint32_t make(Obj o) {
    objs_.push_back(o);
    return static_cast<uint32_t>(objs_.size() - 1);
  }
  uint32_t make_scalar(K kind) { return make(Obj{kind}); }
  uint32_t make_int(int64_t v) { return make(Obj{K::Int, false, v}); }
  uint32_t make_string(K kind, std::string s) {
    return make_shared_string(kind, std::make_shared<const std::string>(std::move(s)));
  }
  uint32_t make_shared_string(K kind, std::shared_ptr<const std::string> s) {
    strings_.push_back(std::move(s));
    return make(Obj{kind, false, 0, 0, static_cast<uint32_t>(strings_.size() - 1)});
  }
  uint32_t make_seq(K kind, std::vector<uint32_t> items) {
    seqs_.push_back(std::move(items));
    return make(Obj{kind, false, 0, 0, static_cast<uint32_t>(seqs_.size() - 1)});
  }
  uint32_t make_dict() {
    dicts_.emplace_back();
    return make(Obj{K::Dict, false, 0, 0, static_cast<uint32_t>(dicts_.size() - 1)});
  }
  uint32_t make_tensor(TorchTensor t) {
    tensors_.push_back(std::move(t));
    return make(Obj{K::Tensor, false, 0, 0, static_cast<uint32_t>(tensors_.size() - 1)});
  }
  const Obj& obj(uint32_t i) const { return objs_[i]; }
  const std::string& str_of(uint32_t i) const { return *strings_[objs_[i].ref]; }

  // Copying done while rebuilding objects, in (roughly) bytes of memory it takes, capped in total
  // in proportion to the pickle: a few bytes of REDUCE or SETITEM must not copy a large object
  // again and again. torch files copy next to nothing (state dicts are rebuilt by SETITEMS).
  uint64_t copy_budget() const { return kCopyFloor + kCopyPerPickleByte * pickle_size_; }
  void charge(uint64_t units, const char* what) {
    if (__builtin_add_overflow(work_, units, &work_) || work_ > copy_budget()) {
      fail(ErrorCode::Unsafe, std::string(what) + ": rebuilding objects would copy more than " +
                                  std::to_string(copy_budget()) +
                                  " bytes (the copy budget for a pickle this size)");
    }
  }
  uint64_t work_left() const { return copy_budget() - work_; }
  const std::vector<uint32_t>& seq_of(uint32_t i) const { return seqs_[objs_[i].ref]; }
  // --- dict keys ---
  bool canonical_key(uint32_t i, std::string& out, int depth) {
    if (depth > 32) return false;
    if (out.size() > work_left()) charge(out.size(), "dict key");
    const Obj& o = obj(i);
    switch (o.kind) {
      case K::None: out += 'N'; return true;
      case K::Bool:  // Python: True == 1, so they are the same key
      case K::Int: {
        out += 'i';
        const int64_t v = o.kind == K::Bool ? (o.flag ? 1 : 0) : o.i;
        out.append(reinterpret_cast<const char*>(&v), sizeof v);
        return true;
      }
      case K::Float: {
        out += 'f';
        out.append(reinterpret_cast<const char*>(&o.f), sizeof o.f);
        return true;
      }
      case K::Str:
      case K::Bytes: {
        const std::string& s = str_of(i);
        out += o.kind == K::Str ? 's' : 'b';
        const uint64_t n = s.size();
        out.append(reinterpret_cast<const char*>(&n), sizeof n);
        out += s;
        return true;
      }
      case K::Tuple: {
        out += '(';
        for (uint32_t item : seq_of(i)) {
          if (!canonical_key(item, out, depth + 1)) return false;
        }
        out += ')';
        return true;
      }
      case K::Dict: {  // only DCP objects (frozen dataclasses such as MetadataIndex) hash
        const DictObj& d = dicts_[o.ref];
        if (d.cls == 0) return false;
        out += '{';
        for (const auto& [k, v] : d.items) {
          if (!canonical_key(k, out, depth + 1) || !canonical_key(v, out, depth + 1)) return false;
        }
        out += '}';
        return true;
      }
      default: return false;
    }
  }
  // `object_state`: BUILD filling a DCP object's fields (the only way they are set).
  void set_item(uint32_t dict, uint32_t key, uint32_t value, bool object_state = false) {
    if (obj(dict).kind != K::Dict) fail(ErrorCode::Corrupt, "SETITEM on a non-dict");
    if (dicts_[obj(dict).ref].cls != 0 && !object_state) fail(ErrorCode::Corrupt, "SETITEM on an object");
    if (options_.allow_list == PickleAllowList::DcpMetadata && obj(key).kind == K::Str &&
        str_of(key) == kClassKey) {
      fail(ErrorCode::Corrupt, "dict key '__class__' (reserved for the object's class)");
    }
    std::string canon;
    if (!canonical_key(key, canon, 0)) fail(ErrorCode::Corrupt, "unhashable dict key");
    charge(canon.size(), "dict key");
    DictObj& d = dicts_[obj(dict).ref];
    const auto [it, inserted] = d.index.emplace(std::move(canon), d.items.size());
    if (inserted) {
      d.items.emplace_back(key, value);
    } else {
      d.items[it->second].second = value;  // Python keeps the first position, last value
    }
  }
  void append(uint32_t list, uint32_t value) {
    const K kind = obj(list).kind;
    if (kind != K::List && kind != K::Set) fail(ErrorCode::Corrupt, "APPEND on a non-list");
    seqs_[obj(list).ref].push_back(value);
  }

  static bool is_global(const Obj& o, G id) { return o.kind == K::Global && static_cast<G>(o.i) == id; }

  // --- argument helpers ---
  const std::vector<uint32_t>& tuple_args(uint32_t args, size_t min, size_t max, const char* what) {
    const K kind = obj(args).kind;
    if (kind != K::Tuple && kind != K::List) fail(ErrorCode::Corrupt, std::string(what) + ": arguments are not a tuple");
    const auto& items = seq_of(args);
    if (items.size() < min || items.size() > max) {
      fail(ErrorCode::Corrupt, std::string(what) + ": " + std::to_string(items.size()) +
                                   " arguments (expected " + std::to_string(min) + ".." +
                                   std::to_string(max) + ")");
    }
    return items;
  }
  int64_t int_arg(uint32_t i, const char* what) {
    const Obj& o = obj(i);
    if (o.kind == K::Int) return o.i;
    if (o.kind == K::Bool) return o.flag ? 1 : 0;
    fail(ErrorCode::Corrupt, std::string(what) + " is a " + kname(o.kind) + ", not an int");
  }
  bool bool_arg(uint32_t i, const char* what) {
    const Obj& o = obj(i);
    if (o.kind == K::Bool) return o.flag;
    if (o.kind == K::Int) return o.i != 0;
    fail(ErrorCode::Corrupt, std::string(what) + " is a " + kname(o.kind) + ", not a bool");
  }
  std::vector<int64_t> ints_arg(uint32_t i, const char* what) {
    const K kind = obj(i).kind;
    if (kind != K::Tuple && kind != K::List) {
      fail(ErrorCode::Corrupt, std::string(what) + " is a " + kname(kind) + ", not a tuple of ints");
    }
    charge(seq_of(i).size() * sizeof(int64_t), what);
    std::vector<int64_t> out;
    for (uint32_t item : seq_of(i)) out.push_back(int_arg(item, what));
    return out;
  }
  static std::string kname(K k) {
    static const char* names[] = {"None", "bool",  "int",    "float",   "str",    "bytes", "list",
                                  "tuple", "dict", "set", "tensor", "storage", "global"};
    return names[static_cast<int>(k)];
  }

  std::string_view source_;
  size_t op_pos_ = 0;  // the opcode being run, for messages
  uint64_t pickle_size_;
  const UnpickleOptions& options_;

  std::vector<Obj> objs_;
  std::vector<std::shared_ptr<const std::string>> strings_;
  std::vector<std::vector<uint32_t>> seqs_;
  std::vector<DictObj> dicts_;
  std::vector<TorchTensor> tensors_;
  std::vector<std::shared_ptr<const TorchStorage>> storages_;
  std::unordered_set<const TorchStorage*> storage_untyped_;
  uint64_t work_ = 0;            // charged copying
  uint64_t expanded_bytes_ = 0;  // excess of expanded views over their storages
};

}  // namespace ckptio::pt::pickle
