// `.metadata`: the restricted unpickler with the DCP allow-list, then the object tree checked
// field by field against what torch.distributed.checkpoint writes, then the checks a reader needs
// before trusting any of it (boxes, coverage, one item per chunk).
#include <algorithm>
#include <map>
#include <numeric>
#include <string>

#include "ckptio/dcp.h"
#include "ckptio/error.h"
#include "format/dcp/metadata_checks.h"
#include "format/torch/allow_list.h"
#include "format/torch/unpickler.h"

namespace ckptio::dcp {

namespace {

using pt::Value;

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  [[noreturn]] void fail(ErrorCode code, const std::string& msg) const {
    throw Error(code, std::string(source_) + ": " + msg);
  }

  // The class of a DCP object ("Metadata"), "" for anything else.
  static std::string_view class_of(const Value& v) {
    if (!v.is_dict() || v.dict_items().empty()) return {};
    const auto& [k, cls] = v.dict_items().front();
    if (k.kind() != Value::Kind::Str || k.as_str() != pt::pickle::kClassKey) return {};
    return cls.as_str();
  }
  void expect_class(const Value& v, std::string_view cls, const std::string& where) const {
    if (class_of(v) != cls) {
      fail(ErrorCode::Corrupt, where + " is not a " + std::string(cls) + " (got " +
                                   (class_of(v).empty() ? std::string(pt::kind_name(v.kind()))
                                                        : std::string(class_of(v))) +
                                   ")");
    }
  }
  // A field; nullptr when absent (dataclass defaults are not pickled when unchanged).
  static const Value* field(const Value& obj, std::string_view name) { return obj.find(name); }
  const Value& need(const Value& obj, std::string_view name, const std::string& where) const {
    const Value* v = field(obj, name);
    if (!v) fail(ErrorCode::Corrupt, where + " has no field '" + std::string(name) + "'");
    return *v;
  }
  std::string str(const Value& v, const std::string& what) const {
    if (v.kind() != Value::Kind::Str) fail(ErrorCode::Corrupt, what + " is a " + std::string(pt::kind_name(v.kind())) + ", not a str");
    return v.as_str();
  }
  int64_t integer(const Value& v, const std::string& what) const {
    if (v.kind() != Value::Kind::Int) fail(ErrorCode::Corrupt, what + " is a " + std::string(pt::kind_name(v.kind())) + ", not an int");
    return v.as_int();
  }
  uint64_t count(const Value& v, const std::string& what) const {
    const int64_t n = integer(v, what);
    if (n < 0) fail(ErrorCode::Corrupt, what + " is negative (" + std::to_string(n) + ")");
    return static_cast<uint64_t>(n);
  }
  Shape shape(const Value& v, const std::string& what) const {
    if (!v.is_sequence()) fail(ErrorCode::Corrupt, what + " is a " + std::string(pt::kind_name(v.kind())) + ", not a torch.Size");
    if (v.items().size() > kMaxRank) fail(ErrorCode::Corrupt, what + " has more than " + std::to_string(kMaxRank) + " dimensions");
    Shape s;
    for (const Value& d : v.items()) s.push_back(static_cast<int64_t>(count(d, what)));
    return s;
  }
  DType dtype(const Value& v, const std::string& where) const {
    const std::string name = str(v, where + " dtype");
    for (int i = 0; i < kDTypeCount; ++i) {
      const auto d = static_cast<DType>(i);
      if (dtype_bits(d) % 8 == 0 && name == "torch." + pt::pickle::torch_dtype_name(d)) return d;
    }
    fail(ErrorCode::Unsupported, where + ": dtype " + name + " has no ckptio equivalent");
  }

  DcpTensor tensor(const std::string& name, const Value& v) const {
    const std::string where = "tensor '" + name + "'";
    DcpTensor t;
    t.name = name;
    const Value& props = need(v, "properties", where);
    expect_class(props, "TensorProperties", where + " properties");
    if (const Value* state = field(props, "__state__")) {
      // (dtype, layout, requires_grad, memory_format, pin_memory)
      if (!state->is_sequence() || state->items().size() < 3) fail(ErrorCode::Corrupt, where + ": TensorProperties state is not a 5-tuple");
      t.dtype = dtype(state->items()[0], where);
      check_layout(state->items()[1], where);
      t.requires_grad = state->items()[2].kind() == Value::Kind::Bool && state->items()[2].as_bool();
    } else {
      t.dtype = dtype(need(props, "dtype", where + " properties"), where);
      if (const Value* layout = field(props, "layout")) check_layout(*layout, where);
      if (const Value* rg = field(props, "requires_grad")) t.requires_grad = rg->kind() == Value::Kind::Bool && rg->as_bool();
    }
    t.shape = shape(need(v, "size", where), where + " size");
    const Value& chunks = need(v, "chunks", where);
    if (!chunks.is_sequence()) fail(ErrorCode::Corrupt, where + ": chunks is not a list");
    for (size_t i = 0; i < chunks.items().size(); ++i) {
      const Value& c = chunks.items()[i];
      const std::string cw = where + " chunk " + std::to_string(i);
      expect_class(c, "ChunkStorageMetadata", cw);
      DcpChunk chunk;
      chunk.offsets = shape(need(c, "offsets", cw), cw + " offsets");
      chunk.sizes = shape(need(c, "sizes", cw), cw + " sizes");
      t.chunks.push_back(std::move(chunk));
    }
    return t;
  }
  void check_layout(const Value& v, const std::string& where) const {
    if (v.kind() == Value::Kind::Str && v.as_str() != "torch.strided") {
      fail(ErrorCode::Unsupported, where + ": layout " + v.as_str() + " (only torch.strided is read)");
    }
  }

  // MetadataIndex -> the key chunks and bytes items look their item up by.
  std::string index_key(const Value& k) const {
    expect_class(k, "MetadataIndex", "a storage_data key");
    const std::string fqn = str(need(k, "fqn", "MetadataIndex"), "MetadataIndex fqn");
    const Value* off = field(k, "offset");
    if (!off || off->is_none()) return item_key(fqn, nullptr);
    const Shape s = shape(*off, "MetadataIndex offset of '" + fqn + "'");
    return item_key(fqn, &s);
  }
  static std::string item_key(const std::string& fqn, const Shape* offsets) {
    std::string key = fqn;
    key += '\0';
    if (!offsets) return key + "-";
    for (int64_t o : *offsets) key += std::to_string(o) + ",";
    return key;
  }
  ItemLocation location(const Value& v, const std::string& where) const {
    expect_class(v, "_StorageInfo", where);
    ItemLocation item;
    item.file = str(need(v, "relative_path", where), where + " relative_path");
    item.offset = count(need(v, "offset", where), where + " offset");
    item.length = count(need(v, "length", where), where + " length");
    if (item.file.empty() || item.file == "." || item.file == ".." ||
        item.file.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos) {
      fail(ErrorCode::Corrupt, where + ": relative_path '" + printable(item.file) +
                                   "' is not a file name inside the checkpoint folder");
    }
    if (item.offset > UINT64_MAX - item.length) fail(ErrorCode::Corrupt, where + ": offset + length overflows");
    if (const Value* tr = field(v, "transform_descriptors")) {
      if (!tr->is_none() && !(tr->is_sequence() && tr->items().empty())) {
        fail(ErrorCode::Unsupported, where + ": item saved through transforms (compression or other "
                                             "storage extensions)");
      }
    }
    return item;
  }

  DcpMetadata run(const Value& root) {
    expect_class(root, "Metadata", ".metadata");
    DcpMetadata m;
    if (const Value* v = field(root, "version"); v && !v->is_none()) m.version = str(*v, "version");
    if (const Value* sm = field(root, "storage_meta"); sm && !sm->is_none()) {
      expect_class(*sm, "StorageMeta", "storage_meta");
      if (const Value* id = field(*sm, "checkpoint_id"); id && id->kind() == Value::Kind::Str) m.checkpoint_id = id->as_str();
      if (const Value* id = field(*sm, "save_id"); id && id->kind() == Value::Kind::Str) m.save_id = id->as_str();
    }
    const Value& sdm = need(root, "state_dict_metadata", "Metadata");
    if (!sdm.is_dict() || !class_of(sdm).empty()) fail(ErrorCode::Corrupt, "state_dict_metadata is not a dict");
    std::map<std::string, ItemLocation> items;
    if (const Value* sd = field(root, "storage_data"); sd && !sd->is_none()) {
      if (!sd->is_dict() || !class_of(*sd).empty()) fail(ErrorCode::Corrupt, "storage_data is not a dict");
      for (const auto& [k, v] : sd->dict_items()) {
        std::string key = index_key(k);
        const std::string fqn = key.substr(0, key.find('\0'));
        if (!items.emplace(std::move(key), location(v, "storage of '" + fqn + "'")).second) {
          fail(ErrorCode::Corrupt, "storage_data lists one item of '" + fqn + "' twice");
        }
      }
    }
    size_t used = 0;
    for (const auto& [k, v] : sdm.dict_items()) {
      const std::string name = str(k, "a state_dict_metadata key");
      const std::string_view cls = class_of(v);
      if (cls == "BytesStorageMetadata") {
        const auto it = items.find(item_key(name, nullptr));
        if (it == items.end()) fail(ErrorCode::Corrupt, "value '" + name + "' has no item in storage_data");
        m.bytes.push_back({name, it->second});
        ++used;
      } else if (cls == "TensorStorageMetadata") {
        DcpTensor t = tensor(name, v);
        for (auto& c : t.chunks) {
          const auto it = items.find(item_key(name, &c.offsets));
          if (it == items.end()) {
            fail(ErrorCode::Corrupt, "tensor '" + name + "' chunk at " + shape_to_string(c.offsets) +
                                         " has no item in storage_data");
          }
          c.item = it->second;
          ++used;
        }
        check_chunks(t, source_);
        m.tensors.push_back(std::move(t));
      } else {
        fail(ErrorCode::Corrupt, "state_dict_metadata '" + name + "' is a " +
                                     (cls.empty() ? std::string(pt::kind_name(v.kind())) : std::string(cls)));
      }
    }
    if (used != items.size()) fail(ErrorCode::Corrupt, "storage_data lists items of no tensor or value in state_dict_metadata");
    return m;
  }

 private:
  std::string_view source_;
};

}  // namespace

DcpMetadata parse_dcp_metadata(std::span<const std::byte> pickle, std::string_view source) {
  const pt::StorageResolver no_storages = [&](const pt::StorageRef&) -> std::shared_ptr<const pt::TorchStorage> {
    throw Error(ErrorCode::Corrupt, "a storage reference in DCP metadata");
  };
  pt::UnpickleOptions options;
  options.allow_list = pt::PickleAllowList::DcpMetadata;
  // The metadata of a big model is a few MB of small objects: the limits scale with the file.
  options.max_expanded_nodes = std::max<uint64_t>(options.max_expanded_nodes, 16 * pickle.size());
  options.max_expanded_bytes = std::max<uint64_t>(options.max_expanded_bytes, 16 * pickle.size());
  options.max_depth = 64;
  const pt::UnpickleResult r = pt::unpickle(pickle, 0, source, no_storages, options);
  if (r.end != pickle.size()) throw Error(ErrorCode::Corrupt, std::string(source) + ": bytes after the pickle's STOP");
  return Parser(source).run(r.value);
}

}  // namespace ckptio::dcp
