// Objects live in an arena of small records addressed by index while the pickle runs (so memo
// references, mutation after memoisation and cycles cost nothing and cannot leak); after STOP the
// reachable graph is turned into the immutable Value tree, sharing preserved and cycles refused.
// Every object is created by an opcode that consumed at least one byte, so the arena is bounded
// by the pickle's length; payloads are shared, never copied per reference, and what rebuilding an
// object copies (OrderedDict(d), set(l), dict keys, ...) is charged to a budget. Converting counts
// the height and the expanded size of every subtree once (memoised), so a tree that would blow up
// when walked with its sharing undone is refused before anyone walks it.
#include "format/torch/unpickler.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "ckptio/error.h"

namespace ckptio::torch {

namespace {

enum class K : uint8_t { None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict, Set, Tensor, Storage, Global };

// Allow-listed globals. Only these names resolve; each is a data constructor handled below.
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
};

struct GlobalInfo {
  G id;
  DType dtype = DType::U8;
  bool untyped = false;
};

const std::unordered_map<std::string, GlobalInfo>& allow_list() {
  static const std::unordered_map<std::string, GlobalInfo> table = [] {
    std::unordered_map<std::string, GlobalInfo> t = {
        {"collections.OrderedDict", {G::OrderedDict}},
        {"collections.Counter", {G::Counter}},
        {"torch._utils._rebuild_tensor", {G::RebuildTensor}},
        {"torch._utils._rebuild_tensor_v2", {G::RebuildTensorV2}},
        {"torch._utils._rebuild_tensor_v3", {G::RebuildTensorV3}},
        {"torch._utils._rebuild_parameter", {G::RebuildParameter}},
        {"torch._utils._rebuild_parameter_with_state", {G::RebuildParameterWithState}},
        {"torch._tensor._rebuild_from_type_v2", {G::RebuildFromTypeV2}},
        {"torch.nn.parameter.Parameter", {G::Parameter}},
        {"torch.Tensor", {G::TensorType}},
        {"torch._tensor.Tensor", {G::TensorType}},
        {"torch.Size", {G::Size}},
        {"torch.device", {G::Device}},
        {"_codecs.encode", {G::CodecsEncode}},
        {"builtins.bytearray", {G::ByteArray}},
        {"builtins.set", {G::Set}},
        {"builtins.frozenset", {G::FrozenSet}},
        {"torch.UntypedStorage", {G::StorageType, DType::U8, true}},
        {"torch.storage.UntypedStorage", {G::StorageType, DType::U8, true}},
    };
    const std::pair<const char*, DType> storages[] = {
        {"Float", DType::F32},       {"Double", DType::F64},       {"Half", DType::F16},
        {"BFloat16", DType::BF16},   {"Long", DType::I64},         {"Int", DType::I32},
        {"Short", DType::I16},       {"Char", DType::I8},          {"Byte", DType::U8},
        {"Bool", DType::BOOL},       {"ComplexFloat", DType::C64}, {"UInt16", DType::U16},
        {"UInt32", DType::U32},      {"UInt64", DType::U64},       {"Float8_e5m2", DType::F8_E5M2},
        {"Float8_e4m3fn", DType::F8_E4M3}, {"Float8_e5m2fnuz", DType::F8_E5M2FNUZ},
        {"Float8_e4m3fnuz", DType::F8_E4M3FNUZ}};
    for (const auto& [name, dtype] : storages) {
      t.emplace("torch." + std::string(name) + "Storage", GlobalInfo{G::StorageType, dtype});
    }
    const std::pair<const char*, DType> dtypes[] = {
        {"float32", DType::F32},   {"float", DType::F32},      {"float64", DType::F64},
        {"double", DType::F64},    {"float16", DType::F16},    {"half", DType::F16},
        {"bfloat16", DType::BF16}, {"int64", DType::I64},      {"long", DType::I64},
        {"int32", DType::I32},     {"int", DType::I32},        {"int16", DType::I16},
        {"short", DType::I16},     {"int8", DType::I8},        {"uint8", DType::U8},
        {"bool", DType::BOOL},     {"complex64", DType::C64},  {"cfloat", DType::C64},
        {"uint16", DType::U16},    {"uint32", DType::U32},     {"uint64", DType::U64},
        {"float8_e5m2", DType::F8_E5M2}, {"float8_e4m3fn", DType::F8_E4M3},
        {"float8_e5m2fnuz", DType::F8_E5M2FNUZ}, {"float8_e4m3fnuz", DType::F8_E4M3FNUZ}};
    for (const auto& [name, dtype] : dtypes) {
      t.emplace("torch." + std::string(name), GlobalInfo{G::DTypeObj, dtype});
    }
    return t;
  }();
  return table;
}

// Known torch names that are data but have no ckptio equivalent: a clearer error than "unsafe".
bool known_unsupported(std::string_view name) {
  static const char* names[] = {"torch.ComplexDoubleStorage", "torch.QInt8Storage",
                                "torch.QUInt8Storage",        "torch.QInt32Storage",
                                "torch.QUInt4x2Storage",      "torch.QUInt2x4Storage",
                                "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor",
                                "torch._utils._rebuild_sparse_csr_tensor",
                                "torch._utils._rebuild_meta_tensor_no_storage",
                                "torch._utils._rebuild_wrapper_subclass",
                                "torch.complex128",           "torch.cdouble"};
  for (const char* n : names) {
    if (name == n) return true;
  }
  return false;
}

// The name torch gives a dtype ("float32"): the first spelling in the allow-list table.
std::string torch_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I64: return "int64";
    case DType::I32: return "int32";
    case DType::I16: return "int16";
    case DType::I8: return "int8";
    case DType::U8: return "uint8";
    case DType::BOOL: return "bool";
    case DType::C64: return "complex64";
    case DType::U16: return "uint16";
    case DType::U32: return "uint32";
    case DType::U64: return "uint64";
    case DType::F8_E5M2: return "float8_e5m2";
    case DType::F8_E4M3: return "float8_e4m3fn";
    case DType::F8_E5M2FNUZ: return "float8_e5m2fnuz";
    case DType::F8_E4M3FNUZ: return "float8_e4m3fnuz";
    default: return std::string(dtype_name(dtype));
  }
}

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
  std::vector<std::pair<uint32_t, uint32_t>> items;
  std::unordered_map<std::string, size_t> index;  // canonical key -> position in items
};

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> data, size_t start, std::string_view source,
            const StorageResolver& resolve, const UnpickleOptions& options)
      : data_(data), pos_(start), source_(source), resolve_(resolve), options_(options) {}

  UnpickleResult run() {
    while (true) {
      op_pos_ = pos_;
      const uint8_t op = u8();
      if (step(op)) break;
    }
    if (stack_.size() != 1 || !marks_.empty()) {
      fail(ErrorCode::Corrupt, "STOP with " + std::to_string(stack_.size()) +
                                   " values on the stack (expected exactly 1)");
    }
    const uint32_t root = stack_.back();
    converted_.assign(objs_.size(), Value());
    state_.assign(objs_.size(), 0);
    expansion_.assign(objs_.size(), Expansion{});
    return UnpickleResult{convert(root, 0), pos_};
  }

 private:
  [[noreturn]] void fail(ErrorCode code, const std::string& msg) const {
    throw Error(code, std::string(source_) + ": pickle byte " + std::to_string(op_pos_) + ": " + msg);
  }

  // --- input ---
  void need(uint64_t n) const {
    if (n > data_.size() - pos_) fail(ErrorCode::Corrupt, "pickle truncated (opcode needs " +
                                                           std::to_string(n) + " more bytes)");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t le(int n) {
    need(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += static_cast<size_t>(n);
    return v;
  }
  std::string_view take(uint64_t n) {
    need(n);
    std::string_view s(reinterpret_cast<const char*>(data_.data()) + pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  std::string_view line() {
    const size_t start = pos_;
    while (true) {
      if (pos_ >= data_.size()) fail(ErrorCode::Corrupt, "pickle truncated inside a GLOBAL name");
      if (data_[pos_++] == std::byte{'\n'}) break;
    }
    return {reinterpret_cast<const char*>(data_.data()) + start, pos_ - start - 1};
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
  uint64_t copy_budget() const { return kCopyFloor + kCopyPerPickleByte * data_.size(); }
  void charge(uint64_t units, const char* what) {
    if (__builtin_add_overflow(work_, units, &work_) || work_ > copy_budget()) {
      fail(ErrorCode::Unsafe, std::string(what) + ": rebuilding objects would copy more than " +
                                  std::to_string(copy_budget()) +
                                  " bytes (the copy budget for a pickle this size)");
    }
  }
  uint64_t work_left() const { return copy_budget() - work_; }
  const std::vector<uint32_t>& seq_of(uint32_t i) const { return seqs_[objs_[i].ref]; }

  // --- stack ---
  void push(uint32_t i) { stack_.push_back(i); }
  uint32_t pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) {
      fail(ErrorCode::Corrupt, "stack underflow");
    }
    const uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t& top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) {
      fail(ErrorCode::Corrupt, "stack underflow");
    }
    return stack_.back();
  }
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail(ErrorCode::Corrupt, "no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  void memo_put(uint64_t index) {
    if (index > 0xffffffffu) fail(ErrorCode::Corrupt, "memo index out of range");
    memo_[static_cast<uint32_t>(index)] = top();
  }
  void memo_get(uint64_t index) {
    const auto it = memo_.find(static_cast<uint32_t>(index));
    if (index > 0xffffffffu || it == memo_.end()) {
      fail(ErrorCode::Corrupt, "memo index " + std::to_string(index) + " was never stored");
    }
    push(it->second);
  }

  int64_t decode_long(std::string_view bytes) {
    if (bytes.empty()) return 0;
    if (bytes.size() > 8) {
      // Wider encodings are fine when the extra bytes are only sign extension.
      const uint8_t fill = (static_cast<uint8_t>(bytes[7]) & 0x80) ? 0xff : 0x00;
      for (size_t i = 8; i < bytes.size(); ++i) {
        if (static_cast<uint8_t>(bytes[i]) != fill) {
          fail(ErrorCode::Unsupported, "integer wider than 64 bits");
        }
      }
      bytes = bytes.substr(0, 8);
    }
    uint64_t v = 0;
    for (size_t i = bytes.size(); i-- > 0;) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
    const size_t bits = bytes.size() * 8;
    if (bits < 64 && (v >> (bits - 1)) & 1) v |= ~uint64_t{0} << bits;  // sign-extend
    return static_cast<int64_t>(v);
  }

  uint32_t unicode(std::string_view s) {
    if (!valid_utf8(s)) fail(ErrorCode::Corrupt, "string is not valid UTF-8");
    return make_string(K::Str, std::string(s));
  }

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
      default: return false;
    }
  }
  void set_item(uint32_t dict, uint32_t key, uint32_t value) {
    if (obj(dict).kind != K::Dict) fail(ErrorCode::Corrupt, "SETITEM on a non-dict");
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

  // --- globals ---
  uint32_t global(std::string_view module, std::string_view name) {
    // Protocol 2 spells Python 3's builtins module the Python 2 way; report what Python would run.
    if (module == "__builtin__") module = "builtins";
    const std::string full = std::string(module) + "." + std::string(name);
    const auto& table = allow_list();
    const auto it = table.find(full);
    if (it == table.end()) {
      if (known_unsupported(full)) {
        fail(ErrorCode::Unsupported, "global '" + full + "' (no ckptio equivalent)");
      }
      fail(ErrorCode::Unsafe, "global '" + full +
                                  "' is not on the allow-list of data-only globals; refusing to "
                                  "load (nothing was executed)");
    }
    const GlobalInfo& g = it->second;
    return make(Obj{K::Global, g.untyped, static_cast<int64_t>(g.id), 0,
                    static_cast<uint32_t>(g.dtype)});
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

  // _rebuild_tensor*: every number checked against the storage before anything else happens.
  uint32_t rebuild_tensor(uint32_t storage_obj, uint32_t offset_obj, uint32_t size_obj,
                          uint32_t stride_obj, bool requires_grad, std::optional<DType> dtype) {
    if (obj(storage_obj).kind != K::Storage) {
      fail(ErrorCode::Corrupt, "tensor rebuild without a storage (got a " + kname(obj(storage_obj).kind) + ")");
    }
    const auto& storage = storages_[obj(storage_obj).ref];
    charge(storage->key.size(), "tensor rebuild");  // named in every message below
    TorchTensor t;
    t.storage = storage;
    t.dtype = dtype.value_or(storage->dtype);
    t.requires_grad = requires_grad;
    t.storage_offset = int_arg(offset_obj, "storage offset");
    t.sizes = ints_arg(size_obj, "tensor size");
    t.strides = ints_arg(stride_obj, "tensor stride");
    const std::string where = "tensor on storage '" + storage->key + "'";
    if (t.sizes.size() != t.strides.size()) {
      fail(ErrorCode::Corrupt, where + ": " + std::to_string(t.sizes.size()) + " sizes but " +
                                   std::to_string(t.strides.size()) + " strides");
    }
    if (t.sizes.size() > 64) fail(ErrorCode::Corrupt, where + ": rank over 64");
    if (t.storage_offset < 0) fail(ErrorCode::Corrupt, where + ": negative storage offset");
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      if (t.sizes[d] < 0 || t.strides[d] < 0) {
        fail(ErrorCode::Corrupt, where + ": negative size or stride " + shape_to_string(t.sizes) +
                                     " / " + shape_to_string(t.strides));
      }
    }
    const int bits = dtype_bits(t.dtype);
    if (bits % 8 != 0) fail(ErrorCode::Unsupported, where + ": sub-byte dtype");
    const uint64_t item = static_cast<uint64_t>(bits / 8);
    uint64_t storage_elems = storage->numel;
    if (t.dtype != storage->dtype) {
      if (!storage_untyped_.count(storage.get())) {
        fail(ErrorCode::Corrupt, where + ": dtype " + std::string(dtype_name(t.dtype)) +
                                     " differs from its typed storage's " +
                                     std::string(dtype_name(storage->dtype)));
      }
      if (storage->numel % item != 0) fail(ErrorCode::Corrupt, where + ": storage bytes not a multiple of the item size");
      storage_elems = storage->numel / item;
    }
    uint64_t numel = 1;
    uint64_t last = static_cast<uint64_t>(t.storage_offset);
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      const auto size = static_cast<uint64_t>(t.sizes[d]);
      const auto stride = static_cast<uint64_t>(t.strides[d]);
      uint64_t span;
      if (__builtin_mul_overflow(numel, size, &numel) ||
          (size > 0 && (__builtin_mul_overflow(size - 1, stride, &span) ||
                        __builtin_add_overflow(last, span, &last)))) {
        fail(ErrorCode::Corrupt, where + ": size " + shape_to_string(t.sizes) + " overflows");
      }
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, item, &nbytes)) fail(ErrorCode::Corrupt, where + ": byte size overflows");
    if (numel > 0 ? last >= storage_elems : static_cast<uint64_t>(t.storage_offset) > storage_elems) {
      fail(ErrorCode::Corrupt, where + ": view (offset " + std::to_string(t.storage_offset) +
                                   ", size " + shape_to_string(t.sizes) + ", stride " +
                                   shape_to_string(t.strides) + ") reaches past the storage's " +
                                   std::to_string(storage_elems) + " elements");
    }
    if (numel > storage_elems) {
      // Overlapping/expanded views materialise more than their storage: cap the total.
      if (__builtin_add_overflow(expanded_bytes_, (numel - storage_elems) * item, &expanded_bytes_) ||
          expanded_bytes_ > options_.max_expanded_bytes) {
        fail(ErrorCode::Corrupt, where + ": expanded views would materialise more than " +
                                     std::to_string(options_.max_expanded_bytes) +
                                     " bytes beyond their storages");
      }
    }
    return make_tensor(std::move(t));
  }

  uint32_t call(uint32_t callable, uint32_t args) {
    const Obj& c = obj(callable);
    if (c.kind != K::Global) {
      fail(ErrorCode::Unsafe, "REDUCE on a " + kname(c.kind) + " (only allow-listed globals may be called)");
    }
    switch (static_cast<G>(c.i)) {
      case G::OrderedDict:
      case G::Counter: {
        const auto& a = tuple_args(args, 0, 1, "OrderedDict");
        const uint32_t d = make_dict();
        if (!a.empty()) {
          const uint32_t src = a[0];
          if (obj(src).kind == K::Dict) {
            charge(dicts_[obj(src).ref].items.size() * kDictEntryBytes, "OrderedDict");
            const auto items = dicts_[obj(src).ref].items;
            for (const auto& [k, v] : items) set_item(d, k, v);
          } else if (obj(src).kind == K::List || obj(src).kind == K::Tuple) {
            charge(seq_of(src).size() * kDictEntryBytes, "OrderedDict");
            const auto pairs = seq_of(src);
            for (uint32_t p : pairs) {
              const auto& kv = tuple_args(p, 2, 2, "OrderedDict item");
              set_item(d, kv[0], kv[1]);
            }
          } else {
            fail(ErrorCode::Corrupt, "OrderedDict from a " + kname(obj(src).kind));
          }
        }
        return d;
      }
      case G::RebuildTensor: {
        const auto a = tuple_args(args, 4, 4, "_rebuild_tensor");
        return rebuild_tensor(a[0], a[1], a[2], a[3], false, std::nullopt);
      }
      case G::RebuildTensorV2: {
        const auto a = tuple_args(args, 6, 7, "_rebuild_tensor_v2");
        return rebuild_tensor(a[0], a[1], a[2], a[3], bool_arg(a[4], "requires_grad"), std::nullopt);
      }
      case G::RebuildTensorV3: {
        const auto a = tuple_args(args, 7, 8, "_rebuild_tensor_v3");
        if (!is_global(obj(a[6]), G::DTypeObj)) fail(ErrorCode::Corrupt, "_rebuild_tensor_v3: dtype is not a torch dtype");
        return rebuild_tensor(a[0], a[1], a[2], a[3], bool_arg(a[4], "requires_grad"),
                              static_cast<DType>(obj(a[6]).ref));
      }
      case G::RebuildParameter:
      case G::RebuildParameterWithState:
      case G::Parameter: {
        const bool with_state = static_cast<G>(c.i) == G::RebuildParameterWithState;
        const bool ctor = static_cast<G>(c.i) == G::Parameter;
        const auto a = ctor ? tuple_args(args, 0, 2, "Parameter")
                            : tuple_args(args, with_state ? 4 : 3, with_state ? 4 : 3, "_rebuild_parameter");
        if (a.empty() || obj(a[0]).kind != K::Tensor) fail(ErrorCode::Corrupt, "Parameter without a tensor");
        TorchTensor t = tensors_[obj(a[0]).ref];
        t.is_parameter = true;
        t.requires_grad = a.size() > 1 ? bool_arg(a[1], "requires_grad") : true;
        return make_tensor(std::move(t));
      }
      case G::RebuildFromTypeV2: {
        const auto a = tuple_args(args, 4, 4, "_rebuild_from_type_v2");
        const Obj& type = obj(a[1]);
        if (!is_global(type, G::TensorType) && !is_global(type, G::Parameter)) {
          fail(ErrorCode::Unsupported, "_rebuild_from_type_v2 for a tensor subclass");
        }
        // torch wraps one rebuild function; a list can hold itself, so nesting would not end.
        if (is_global(obj(a[0]), G::RebuildFromTypeV2)) {
          fail(ErrorCode::Corrupt, "_rebuild_from_type_v2 of _rebuild_from_type_v2");
        }
        const uint32_t result = call(a[0], a[2]);
        if (obj(result).kind != K::Tensor) fail(ErrorCode::Corrupt, "_rebuild_from_type_v2 did not make a tensor");
        if (is_global(type, G::Parameter)) {
          TorchTensor t = tensors_[obj(result).ref];
          t.is_parameter = true;
          return make_tensor(std::move(t));
        }
        return result;
      }
      case G::Size: {
        const auto a = tuple_args(args, 0, 1, "torch.Size");
        std::vector<uint32_t> dims;
        if (!a.empty()) {
          for (int64_t d : ints_arg(a[0], "torch.Size dimension")) dims.push_back(make_int(d));
        }
        return make_seq(K::Tuple, std::move(dims));
      }
      case G::Device: {
        const auto a = tuple_args(args, 1, 2, "torch.device");
        if (obj(a[0]).kind != K::Str) fail(ErrorCode::Corrupt, "torch.device: type is not a str");
        charge(str_of(a[0]).size(), "torch.device");
        std::string s = str_of(a[0]);
        if (a.size() == 2 && obj(a[1]).kind != K::None) s += ":" + std::to_string(int_arg(a[1], "device index"));
        return make_string(K::Str, std::move(s));
      }
      case G::CodecsEncode: {
        const auto a = tuple_args(args, 2, 2, "_codecs.encode");
        if (obj(a[0]).kind != K::Str || obj(a[1]).kind != K::Str) fail(ErrorCode::Corrupt, "_codecs.encode: arguments are not str");
        const std::string& enc = str_of(a[1]);
        if (enc != "latin1" && enc != "latin-1") fail(ErrorCode::Unsupported, "_codecs.encode with encoding '" + enc + "'");
        // UTF-8 text whose code points are all < 256, turned into those bytes.
        const std::string& text = str_of(a[0]);
        charge(text.size(), "_codecs.encode");
        std::string out;
        for (size_t i = 0; i < text.size(); ++i) {
          const auto b = static_cast<unsigned char>(text[i]);
          if (b < 0x80) {
            out += static_cast<char>(b);
          } else if ((b & 0xfe) == 0xc2 && i + 1 < text.size()) {
            out += static_cast<char>(((b & 0x03) << 6) | (static_cast<unsigned char>(text[++i]) & 0x3f));
          } else {
            fail(ErrorCode::Corrupt, "_codecs.encode: character outside latin-1");
          }
        }
        return make_string(K::Bytes, std::move(out));
      }
      case G::ByteArray: {
        const auto a = tuple_args(args, 0, 1, "bytearray");
        if (a.empty()) return make_string(K::Bytes, "");
        if (obj(a[0]).kind != K::Bytes) fail(ErrorCode::Unsupported, "bytearray from a " + kname(obj(a[0]).kind));
        return make_shared_string(K::Bytes, strings_[obj(a[0]).ref]);  // immutable here: shared
      }
      case G::Set:
      case G::FrozenSet: {
        const auto a = tuple_args(args, 0, 1, "set");
        std::vector<uint32_t> items;
        if (!a.empty()) {
          const K kind = obj(a[0]).kind;
          if (kind != K::List && kind != K::Tuple && kind != K::Set) fail(ErrorCode::Corrupt, "set from a " + kname(kind));
          charge(seq_of(a[0]).size() * sizeof(uint32_t), "set");
          items = seq_of(a[0]);
        }
        return make_seq(K::Set, std::move(items));
      }
      case G::TensorType:
      case G::StorageType:
      case G::DTypeObj:
        fail(ErrorCode::Unsupported, "calling a torch type or dtype object");
    }
    fail(ErrorCode::Internal, "unhandled global");
  }

  uint32_t persistent_load(uint32_t pid) {
    if (obj(pid).kind != K::Tuple) fail(ErrorCode::Corrupt, "persistent id is not a tuple");
    if (seq_of(pid).empty() || obj(seq_of(pid)[0]).kind != K::Str || str_of(seq_of(pid)[0]) != "storage") {
      fail(ErrorCode::Corrupt, "persistent id is not a ('storage', ...) tuple");
    }
    if (seq_of(pid).size() != 5 && seq_of(pid).size() != 6) {
      fail(ErrorCode::Corrupt, "persistent id has " + std::to_string(seq_of(pid).size()) + " items");
    }
    const auto items = seq_of(pid);
    const Obj& type = obj(items[1]);
    if (!is_global(type, G::StorageType)) fail(ErrorCode::Corrupt, "persistent id names no storage class");
    if (obj(items[2]).kind != K::Str || obj(items[3]).kind != K::Str) {
      fail(ErrorCode::Corrupt, "persistent id key or location is not a str");
    }
    charge(str_of(items[2]).size() + str_of(items[3]).size(), "persistent id");
    StorageRef ref;
    ref.dtype = static_cast<DType>(type.ref);
    ref.untyped = type.flag;
    ref.key = str_of(items[2]);
    ref.location = str_of(items[3]);
    const int64_t numel = int_arg(items[4], "storage size");
    if (numel < 0) fail(ErrorCode::Corrupt, "negative storage size");
    ref.numel = static_cast<uint64_t>(numel);
    if (items.size() == 6 && obj(items[5]).kind != K::None) {
      const auto& view = tuple_args(items[5], 3, 3, "storage view");
      if (obj(view[0]).kind != K::Str) fail(ErrorCode::Corrupt, "storage view key is not a str");
      const int64_t off = int_arg(view[1], "view offset"), size = int_arg(view[2], "view size");
      if (off < 0 || size < 0) fail(ErrorCode::Corrupt, "negative storage view");
      ref.has_view = true;
      charge(str_of(view[0]).size(), "persistent id");
      ref.view_key = str_of(view[0]);
      ref.view_offset = static_cast<uint64_t>(off);
      ref.view_numel = static_cast<uint64_t>(size);
    }
    std::shared_ptr<const TorchStorage> storage;
    try {
      storage = resolve_(ref);
    } catch (const Error& e) {
      fail(e.code(), e.message());
    }
    if (!storage) fail(ErrorCode::Internal, "storage resolver returned nothing");
    if (ref.untyped) storage_untyped_.insert(storage.get());
    storages_.push_back(std::move(storage));
    return make(Obj{K::Storage, false, 0, 0, static_cast<uint32_t>(storages_.size() - 1)});
  }

  // Returns true on STOP.
  bool step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t v = u8();
        if (v > 5) fail(ErrorCode::Unsupported, "pickle protocol " + std::to_string(v));
        return false;
      }
      case 0x95: {  // FRAME: framing is a read-ahead hint; the length must still fit
        const uint64_t n = le(8);
        if (n > data_.size() - pos_) fail(ErrorCode::Corrupt, "FRAME longer than the pickle");
        return false;
      }
      case '.': return true;  // STOP
      case '(': marks_.push_back(stack_.size()); return false;
      case '0': pop(); return false;
      case '1': pop_mark(); return false;
      case '2': push(top()); return false;
      case 'N': push(make_scalar(K::None)); return false;
      case 0x88: push(make(Obj{K::Bool, true})); return false;
      case 0x89: push(make(Obj{K::Bool, false})); return false;
      case 'J': push(make_int(static_cast<int32_t>(static_cast<uint32_t>(le(4))))); return false;
      case 'K': push(make_int(static_cast<int64_t>(le(1)))); return false;
      case 'M': push(make_int(static_cast<int64_t>(le(2)))); return false;
      case 0x8a: {  // LONG1
        const uint64_t n = le(1);
        push(make_int(decode_long(take(n))));
        return false;
      }
      case 0x8b: {  // LONG4
        const uint64_t n = le(4);
        if (n > 0x7fffffffu) fail(ErrorCode::Corrupt, "negative LONG4 length");
        push(make_int(decode_long(take(n))));
        return false;
      }
      case 'G': {  // BINFLOAT, big-endian IEEE double
        uint64_t bits = 0;
        for (const char ch : take(8)) bits = (bits << 8) | static_cast<uint8_t>(ch);
        push(make(Obj{K::Float, false, 0, std::bit_cast<double>(bits)}));
        return false;
      }
      case 'X': push(unicode(take(le(4)))); return false;     // BINUNICODE
      case 0x8c: push(unicode(take(le(1)))); return false;    // SHORT_BINUNICODE
      case 0x8d: push(unicode(take(le(8)))); return false;    // BINUNICODE8
      case 'T':                                               // BINSTRING (Python 2 str)
      case 'U': {                                             // SHORT_BINSTRING
        const std::string_view s = take(le(op == 'T' ? 4 : 1));
        push(make_string(valid_utf8(s) ? K::Str : K::Bytes, std::string(s)));
        return false;
      }
      case 'B': push(make_string(K::Bytes, std::string(take(le(4))))); return false;
      case 'C': push(make_string(K::Bytes, std::string(take(le(1))))); return false;
      case 0x8e: push(make_string(K::Bytes, std::string(take(le(8))))); return false;
      case 0x96: push(make_string(K::Bytes, std::string(take(le(8))))); return false;  // BYTEARRAY8
      case ']': push(make_seq(K::List, {})); return false;
      case ')': push(make_seq(K::Tuple, {})); return false;
      case '}': push(make_dict()); return false;
      case 0x8f: push(make_seq(K::Set, {})); return false;  // EMPTY_SET
      case 'l': push(make_seq(K::List, pop_mark())); return false;
      case 't': push(make_seq(K::Tuple, pop_mark())); return false;
      case 0x91: push(make_seq(K::Set, pop_mark())); return false;  // FROZENSET
      case 0x85: {
        const uint32_t a = pop();
        push(make_seq(K::Tuple, {a}));
        return false;
      }
      case 0x86: {
        const uint32_t b = pop(), a = pop();
        push(make_seq(K::Tuple, {a, b}));
        return false;
      }
      case 0x87: {
        const uint32_t c = pop(), b = pop(), a = pop();
        push(make_seq(K::Tuple, {a, b, c}));
        return false;
      }
      case 'd': {  // DICT
        const auto items = pop_mark();
        const uint32_t d = make_dict();
        if (items.size() % 2) fail(ErrorCode::Corrupt, "DICT with an odd number of items");
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
        push(d);
        return false;
      }
      case 'a': {
        const uint32_t v = pop();
        append(top(), v);
        return false;
      }
      case 'e': {  // APPENDS
        const auto items = pop_mark();
        const uint32_t list = top();
        for (uint32_t v : items) append(list, v);
        return false;
      }
      case 0x90: {  // ADDITEMS
        const auto items = pop_mark();
        const uint32_t set = top();
        if (obj(set).kind != K::Set) fail(ErrorCode::Corrupt, "ADDITEMS on a non-set");
        for (uint32_t v : items) append(set, v);
        return false;
      }
      case 's': {
        const uint32_t v = pop(), k = pop();
        set_item(top(), k, v);
        return false;
      }
      case 'u': {  // SETITEMS
        const auto items = pop_mark();
        if (items.size() % 2) fail(ErrorCode::Corrupt, "SETITEMS with an odd number of items");
        const uint32_t d = top();
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
        return false;
      }
      case 'q': memo_put(le(1)); return false;  // BINPUT
      case 'r': memo_put(le(4)); return false;  // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); return false;  // MEMOIZE
      case 'h': memo_get(le(1)); return false;
      case 'j': memo_get(le(4)); return false;
      case 'c': {  // GLOBAL
        const std::string_view module = line();
        const std::string_view name = line();
        push(global(module, name));
        return false;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = pop(), module = pop();
        if (obj(name).kind != K::Str || obj(module).kind != K::Str) fail(ErrorCode::Corrupt, "STACK_GLOBAL of non-strings");
        push(global(str_of(module), str_of(name)));
        return false;
      }
      case 'R': {  // REDUCE
        const uint32_t args = pop();
        const uint32_t callable = pop();
        push(call(callable, args));
        return false;
      }
      case 0x81:    // NEWOBJ
      case 0x92: {  // NEWOBJ_EX
        if (op == 0x92) {
          const uint32_t kwargs = pop();
          if (obj(kwargs).kind != K::Dict || !dicts_[obj(kwargs).ref].items.empty()) {
            fail(ErrorCode::Unsupported, "NEWOBJ_EX with keyword arguments");
          }
        }
        const uint32_t args = pop();
        const uint32_t cls = pop();
        const Obj& c = obj(cls);
        if (is_global(c, G::Parameter)) {
          push(call(cls, args));
        } else if (is_global(c, G::OrderedDict) || is_global(c, G::Counter)) {
          push(make_dict());  // cls.__new__ ignores its arguments; items follow via SETITEMS
        } else if (is_global(c, G::Set)) {
          push(make_seq(K::Set, {}));
        } else {
          fail(ErrorCode::Unsafe, "NEWOBJ of a " + kname(c.kind) + " that is not an allowed class");
        }
        return false;
      }
      case 'b': {  // BUILD: object state; harmless for the types we build, anything else refused
        const uint32_t state = pop();
        (void)state;
        const K kind = obj(top()).kind;
        if (kind != K::Tensor && kind != K::Dict) {
          fail(ErrorCode::Unsafe, "BUILD on a " + kname(kind) + " (only tensors and dicts take state)");
        }
        return false;
      }
      case 'Q': {  // BINPERSID
        const uint32_t pid = pop();
        push(persistent_load(pid));
        return false;
      }
      case 'i':
      case 'o':
        fail(ErrorCode::Unsafe, std::string("protocol-0 ") + (op == 'i' ? "INST" : "OBJ") +
                                    " builds arbitrary objects; refused (nothing was executed)");
      case 0x82:
      case 0x83:
      case 0x84:
        fail(ErrorCode::Unsafe, "EXT opcodes resolve globals through the copyreg registry; refused");
      case 'I': case 'L': case 'S': case 'V': case 'F': case 'P': case 'g': case 'p':
        fail(ErrorCode::Unsupported, std::string("protocol-0 text opcode '") + static_cast<char>(op) + "'");
      case 0x97:
      case 0x98:
        fail(ErrorCode::Unsupported, "out-of-band buffers (pickle protocol 5)");
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02x", op);
        fail(ErrorCode::Corrupt, std::string("unknown pickle opcode ") + buf);
      }
    }
  }

  // --- arena -> Value ---

  // What a subtree becomes when walked with its sharing undone; saturating counts.
  struct Expansion {
    uint64_t height = 0;
    uint64_t nodes = 0;
    uint64_t bytes = 0;   // str/bytes payloads, dict keys as text, tensor views
    uint64_t leaves = 0;  // entries flatten() makes
    uint64_t names = 0;   // bytes of the names flatten() makes, below this node
  };
  static uint64_t add(uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
  }
  static uint64_t mul(uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
  }
  // Adds a child reached under a path component of `part` bytes.
  static void add_child(Expansion& e, const Expansion& child, uint64_t part) {
    e.height = std::max(e.height, add(child.height, 1));
    e.nodes = add(e.nodes, child.nodes);
    e.bytes = add(e.bytes, child.bytes);
    e.leaves = add(e.leaves, child.leaves);
    e.names = add(add(e.names, child.names), mul(child.leaves, add(part, 1)));
  }
  void check_expansion(const Expansion& e) const {
    if (e.height > static_cast<uint64_t>(options_.max_depth)) {
      fail(ErrorCode::Corrupt, "objects nested deeper than " + std::to_string(options_.max_depth) +
                                   " (counting shared objects at every place they appear)");
    }
    if (e.nodes > options_.max_expanded_nodes) {
      fail(ErrorCode::Unsafe, "the object tree expands to more than " +
                                  std::to_string(options_.max_expanded_nodes) +
                                  " nodes once its shared objects are walked at every place they "
                                  "appear (the limit for a file this size)");
    }
    if (add(e.bytes, e.names) > options_.max_expanded_bytes) {
      fail(ErrorCode::Unsafe, "the object tree expands to more than " +
                                  std::to_string(options_.max_expanded_bytes) +
                                  " bytes of strings, names and tensor views once its shared "
                                  "objects are walked at every place they appear (the limit for a "
                                  "file this size)");
    }
  }

  Value convert(uint32_t i, int depth) {
    if (depth > options_.max_depth) {
      fail(ErrorCode::Corrupt, "objects nested deeper than " + std::to_string(options_.max_depth));
    }
    if (state_[i] == 2) return converted_[i];
    if (state_[i] == 1) fail(ErrorCode::Corrupt, "the pickle builds a reference cycle");
    state_[i] = 1;
    const Obj& o = obj(i);
    Value v;
    Expansion e{1, 1, 0, 1, 0};
    switch (o.kind) {
      case K::None: break;
      case K::Bool: v = Value::boolean(o.flag); break;
      case K::Int: v = Value::integer(o.i); break;
      case K::Float: v = Value::floating(o.f); break;
      case K::Str:
        v = Value::str(strings_[o.ref]);
        e.bytes = v.as_str().size();
        break;
      case K::Bytes:
        v = Value::bytes(strings_[o.ref]);
        e.bytes = v.as_str().size();
        break;
      case K::List:
      case K::Set:
      case K::Tuple: {
        ValueList items;
        const auto& src = seqs_[o.ref];
        items.reserve(src.size());
        if (!src.empty()) e.leaves = 0;
        for (size_t n = 0; n < src.size(); ++n) {
          items.push_back(convert(src[n], depth + 1));
          add_child(e, expansion_[src[n]], std::to_string(n).size());
        }
        v = o.kind == K::Tuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
        break;
      }
      case K::Dict: {
        ValueDict items;
        const auto& src = dicts_[o.ref].items;
        items.reserve(src.size());
        if (!src.empty()) e.leaves = 0;
        for (const auto& [k, val] : src) {
          items.emplace_back(convert(k, depth + 1), convert(val, depth + 1));
          // Walkers write the key as text once per place the dict appears.
          const uint64_t key_text = Value::key_to_string(items.back().first).size();
          Expansion key = expansion_[k];
          key.leaves = 0;
          key.names = 0;
          add_child(e, key, 0);
          e.bytes = add(e.bytes, key_text);
          add_child(e, expansion_[val], key_text);
        }
        v = Value::dict(std::move(items));
        break;
      }
      case K::Tensor:
        v = Value::tensor(tensors_[o.ref]);
        e.bytes = v.as_tensor().nbytes();
        break;
      case K::Storage: {  // a bare storage: a flat 1-D tensor over all of it
        TorchTensor t;
        t.storage = storages_[o.ref];
        t.dtype = t.storage->dtype;
        t.sizes = {static_cast<int64_t>(t.storage->numel)};
        t.strides = {1};
        v = Value::tensor(std::move(t));
        e.bytes = v.as_tensor().nbytes();
        break;
      }
      case K::Global:
        if (static_cast<G>(o.i) == G::DTypeObj) {
          v = Value::str("torch." + torch_dtype_name(static_cast<DType>(o.ref)));
        } else {
          fail(ErrorCode::Unsupported, "a class or function object as a value");
        }
        break;
    }
    check_expansion(e);
    expansion_[i] = e;
    state_[i] = 2;
    converted_[i] = v;
    return v;
  }

  std::span<const std::byte> data_;
  size_t pos_;
  size_t op_pos_ = 0;
  std::string_view source_;
  const StorageResolver& resolve_;
  const UnpickleOptions& options_;

  std::vector<Obj> objs_;
  std::vector<std::shared_ptr<const std::string>> strings_;
  std::vector<std::vector<uint32_t>> seqs_;
  std::vector<DictObj> dicts_;
  std::vector<TorchTensor> tensors_;
  std::vector<std::shared_ptr<const TorchStorage>> storages_;
  std::unordered_set<const TorchStorage*> storage_untyped_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
  uint64_t expanded_bytes_ = 0;
  std::vector<Value> converted_;
  std::vector<uint8_t> state_;
  std::vector<Expansion> expansion_;
  uint64_t work_ = 0;
};

}  // namespace

UnpickleResult unpickle(std::span<const std::byte> data, size_t start, std::string_view source,
                        const StorageResolver& resolve, const UnpickleOptions& options) {
  if (start > data.size()) throw Error(ErrorCode::InvalidArgument, "unpickle start past the data");
  return Unpickler(data, start, source, resolve, options).run();
}

}  // namespace ckptio::torch
