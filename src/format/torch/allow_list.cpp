// The allow-list and the object rebuilds (see allow_list.h).
#include "format/torch/allow_list.h"

#include <string>
#include <unordered_map>

namespace ckptio::pt::pickle {

namespace {

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

// torch.distributed.checkpoint's `.metadata` (PyTorch 2.x): its dataclasses, and the few torch and
// pathlib names their fields hold. Nothing here rebuilds a tensor or names a storage.
const std::unordered_map<std::string, GlobalInfo>& dcp_allow_list() {
  static const std::unordered_map<std::string, GlobalInfo> table = [] {
    std::unordered_map<std::string, GlobalInfo> t = {
        {"torch.Size", {G::Size}},
        {"torch.serialization._get_layout", {G::GetLayout}},
        {"torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING", {G::MemFormatEncoding}},
        {"pathlib.PosixPath", {G::PathClass}},
        {"pathlib.PurePosixPath", {G::PathClass}},
        {"pathlib.WindowsPath", {G::PathClass}},
        {"pathlib.PureWindowsPath", {G::PathClass}},
        // Python 3.13 moved the classes into pathlib._local.
        {"pathlib._local.PosixPath", {G::PathClass}},
        {"pathlib._local.PurePosixPath", {G::PathClass}},
        {"pathlib._local.WindowsPath", {G::PathClass}},
        {"pathlib._local.PureWindowsPath", {G::PathClass}},
    };
    const auto& names = dcp_class_names();
    for (size_t i = 1; i < names.size(); ++i) {
      const char* module = names[i] == "_StorageInfo" ? "torch.distributed.checkpoint.filesystem"
                                                       : "torch.distributed.checkpoint.metadata";
      t.emplace(std::string(module) + "." + names[i], GlobalInfo{G::DcpClass, static_cast<DType>(i)});
    }
    for (const auto& [name, info] : allow_list()) {
      if (info.id == G::DTypeObj) t.emplace(name, info);
    }
    return t;
  }();
  return table;
}

// Layouts and memory formats that older PyTorch pickled as bare globals: their names.
bool dcp_constant(std::string_view name) {
  static const char* names[] = {"torch.strided", "torch.sparse_coo", "torch.contiguous_format",
                                "torch.channels_last", "torch.channels_last_3d",
                                "torch.preserve_format"};
  for (const char* n : names) {
    if (name == n) return true;
  }
  return false;
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

}  // namespace

const std::vector<std::string>& dcp_class_names() {
  static const std::vector<std::string> names = {
      "",  // 0: a plain dict
      "Metadata",         "TensorStorageMetadata", "ChunkStorageMetadata", "BytesStorageMetadata",
      "TensorProperties", "MetadataIndex",         "StorageMeta",          "_StorageInfo"};
  return names;
}

// The first spelling in the allow-list table.
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

uint32_t ObjectBuilder::global(std::string_view module, std::string_view name) {
  // Protocol 2 spells Python 3's builtins module the Python 2 way; report what Python would run.
  if (module == "__builtin__") module = "builtins";
  const std::string full = std::string(module) + "." + std::string(name);
  const bool dcp = options_.allow_list == PickleAllowList::DcpMetadata;
  if (dcp && dcp_constant(full)) return make_string(K::Str, full);
  const auto& table = dcp ? dcp_allow_list() : allow_list();
  const auto it = table.find(full);
  if (it == table.end()) {
    if (!dcp && known_unsupported(full)) {
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

// _rebuild_tensor*: every number checked against the storage before anything else happens.
uint32_t ObjectBuilder::rebuild_tensor(uint32_t storage_obj, uint32_t offset_obj,
                                       uint32_t size_obj, uint32_t stride_obj, bool requires_grad,
                                       std::optional<DType> dtype) {
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

uint32_t ObjectBuilder::call(uint32_t callable, uint32_t args) {
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
    case G::PathClass: {  // PurePath.__reduce__: (cls, self.parts)
      const std::vector<uint32_t> parts = tuple_args(args, 0, 4096, "pathlib path");
      std::string path;
      for (uint32_t p : parts) {
        if (obj(p).kind != K::Str) fail(ErrorCode::Corrupt, "pathlib path: a part is not a str");
        charge(str_of(p).size() + 1, "pathlib path");
        const std::string& part = str_of(p);
        if (!path.empty() && path.back() != '/' && path.back() != '\\') path += '/';
        path += part;
      }
      return make_string(K::Str, std::move(path));
    }
    case G::GetLayout: {
      const auto& a = tuple_args(args, 1, 1, "_get_layout");
      if (obj(a[0]).kind != K::Str || !dcp_constant(str_of(a[0]))) {
        fail(ErrorCode::Unsupported, "_get_layout of something other than a known torch layout");
      }
      return a[0];
    }
    case G::MemFormatEncoding: {
      const auto& a = tuple_args(args, 1, 1, "_MEM_FORMAT_ENCODING");
      return make_int(int_arg(a[0], "_MEM_FORMAT_ENCODING value"));
    }
    case G::DcpClass:
      fail(ErrorCode::Corrupt, "REDUCE on a DCP metadata class (they are pickled by NEWOBJ and BUILD)");
    case G::TensorType:
    case G::StorageType:
    case G::DTypeObj:
      fail(ErrorCode::Unsupported, "calling a torch type or dtype object");
  }
  fail(ErrorCode::Internal, "unhandled global");
}

uint32_t ObjectBuilder::persistent_load(uint32_t pid) {
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

uint32_t ObjectBuilder::new_object(uint32_t cls, uint32_t args) {
  const Obj& c = obj(cls);
  if (is_global(c, G::Parameter)) return call(cls, args);
  if (is_global(c, G::OrderedDict) || is_global(c, G::Counter)) {
    return make_dict();  // cls.__new__ ignores its arguments; items follow via SETITEMS
  }
  if (is_global(c, G::Set)) return make_seq(K::Set, {});
  if (is_global(c, G::DcpClass)) {
    // copyreg.__newobj__: an empty instance; BUILD sets its fields. The class goes in first,
    // directly (set_item refuses the key, so no state or SETITEM can forge or change it).
    tuple_args(args, 0, 0, "DCP class");  // copyreg passes no arguments
    const uint32_t cls_index = c.ref;      // `c` lives in the arena, which the makes below move
    const uint32_t d = make_dict();
    dicts_[obj(d).ref].cls = cls_index;
    const std::string& name = dcp_class_names()[cls_index];
    const uint32_t key = make_string(K::Str, std::string(kClassKey));
    const uint32_t value = make_string(K::Str, name);
    dicts_[obj(d).ref].index.emplace(std::string(kClassKey), 0);
    dicts_[obj(d).ref].items.emplace_back(key, value);
    return d;
  }
  fail(ErrorCode::Unsafe, "NEWOBJ of a " + kname(c.kind) + " that is not an allowed class");
}

void ObjectBuilder::build(uint32_t target, uint32_t state) {
  const K kind = obj(target).kind;
  if (kind == K::Dict && dicts_[obj(target).ref].cls != 0) {
    // A dataclass's state is its __dict__, or (None, slots) with __slots__; TensorProperties
    // keeps a tuple (its __setstate__).
    uint32_t fields = state;
    if (obj(state).kind == K::Tuple && seq_of(state).size() == 2 && obj(seq_of(state)[0]).kind == K::None &&
        obj(seq_of(state)[1]).kind == K::Dict) {
      fields = seq_of(state)[1];
    }
    if (obj(fields).kind == K::Dict && dicts_[obj(fields).ref].cls == 0) {
      charge(dicts_[obj(fields).ref].items.size() * kDictEntryBytes, "BUILD");
      const auto items = dicts_[obj(fields).ref].items;
      for (const auto& [k, v] : items) {
        if (obj(k).kind != K::Str) fail(ErrorCode::Corrupt, "BUILD: a field name is not a str");
        set_item(target, k, v, true);
      }
    } else if (obj(state).kind == K::Tuple) {
      set_item(target, make_string(K::Str, "__state__"), state, true);
    } else {
      fail(ErrorCode::Corrupt, "BUILD of a DCP object with a " + kname(obj(state).kind) + " state");
    }
    return;
  }
  if (kind != K::Tensor && kind != K::Dict) {
    fail(ErrorCode::Unsafe, "BUILD on a " + kname(kind) + " (only tensors and dicts take state)");
  }
}

}  // namespace ckptio::pt::pickle
