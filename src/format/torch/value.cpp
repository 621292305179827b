// Value: the immutable object tree the unpickler produces, and the tensor view helpers.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"

namespace ckptio::pt {

std::string_view kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::Str: return "str";
    case Value::Kind::Bytes: return "bytes";
    case Value::Kind::List: return "list";
    case Value::Kind::Tuple: return "tuple";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Tensor: return "tensor";
  }
  return "unknown";
}

Value Value::boolean(bool v) { return Value(Kind::Bool, v); }
Value Value::integer(int64_t v) { return Value(Kind::Int, v); }
Value Value::floating(double v) { return Value(Kind::Float, v); }
Value Value::str(std::string v) {
  return Value(Kind::Str, std::make_shared<const std::string>(std::move(v)));
}
Value Value::bytes(std::string v) {
  return Value(Kind::Bytes, std::make_shared<const std::string>(std::move(v)));
}
Value Value::str(std::shared_ptr<const std::string> v) {
  if (!v) v = std::make_shared<const std::string>();
  return Value(Kind::Str, std::move(v));
}
Value Value::bytes(std::shared_ptr<const std::string> v) {
  if (!v) v = std::make_shared<const std::string>();
  return Value(Kind::Bytes, std::move(v));
}
Value Value::list(ValueList items) {
  return Value(Kind::List, std::make_shared<const ValueList>(std::move(items)));
}
Value Value::tuple(ValueList items) {
  return Value(Kind::Tuple, std::make_shared<const ValueList>(std::move(items)));
}
Value Value::dict(ValueDict items) {
  return Value(Kind::Dict, std::make_shared<const ValueDict>(std::move(items)));
}
Value Value::tensor(TorchTensor t) {
  return Value(Kind::Tensor, std::make_shared<const TorchTensor>(std::move(t)));
}

namespace {
[[noreturn]] void wrong_kind(Value::Kind actual, std::string_view wanted) {
  throw Error(ErrorCode::InvalidArgument, "expected " + std::string(wanted) + ", found " +
                                              std::string(kind_name(actual)));
}
}  // namespace

bool Value::as_bool() const {
  if (kind_ != Kind::Bool) wrong_kind(kind_, "bool");
  return std::get<bool>(payload_);
}
int64_t Value::as_int() const {
  if (kind_ != Kind::Int) wrong_kind(kind_, "int");
  return std::get<int64_t>(payload_);
}
double Value::as_float() const {
  if (kind_ == Kind::Int) return static_cast<double>(std::get<int64_t>(payload_));
  if (kind_ != Kind::Float) wrong_kind(kind_, "float");
  return std::get<double>(payload_);
}
const std::string& Value::as_str() const {
  if (kind_ != Kind::Str && kind_ != Kind::Bytes) wrong_kind(kind_, "str");
  return *std::get<std::shared_ptr<const std::string>>(payload_);
}
const ValueList& Value::items() const {
  if (kind_ != Kind::List && kind_ != Kind::Tuple) wrong_kind(kind_, "list or tuple");
  return *std::get<std::shared_ptr<const ValueList>>(payload_);
}
const ValueDict& Value::dict_items() const {
  if (kind_ != Kind::Dict) wrong_kind(kind_, "dict");
  return *std::get<std::shared_ptr<const ValueDict>>(payload_);
}
const TorchTensor& Value::as_tensor() const {
  if (kind_ != Kind::Tensor) wrong_kind(kind_, "tensor");
  return *std::get<std::shared_ptr<const TorchTensor>>(payload_);
}

const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::Dict) return nullptr;
  for (const auto& [k, v] : dict_items()) {
    if ((k.kind() == Kind::Str || k.kind() == Kind::Int) && key_to_string(k) == key) return &v;
  }
  return nullptr;
}

namespace {
std::string float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // Shortest text that reads back to the same double, like Python's repr.
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}
}  // namespace

std::string Value::key_to_string(const Value& key) {
  switch (key.kind()) {
    case Kind::Str: return key.as_str();
    case Kind::Int: return std::to_string(key.as_int());
    case Kind::None: return "None";
    case Kind::Bool: return key.as_bool() ? "True" : "False";
    case Kind::Float: return float_repr(key.as_float());
    case Kind::Bytes: {  // like Python's repr: printable ASCII as is, the rest escaped
      std::string s = "b'";
      for (unsigned char c : key.as_str()) {
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
          s += static_cast<char>(c);
        } else {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          s += buf;
        }
      }
      return s + "'";
    }
    case Kind::Tuple: {
      std::string s = "(";
      const auto& items = key.items();
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) s += ", ";
        s += key_to_string(items[i]);
      }
      if (items.size() == 1) s += ",";
      return s + ")";
    }
    default: return "<" + std::string(kind_name(key.kind())) + ">";
  }
}

// --- TorchTensor ------------------------------------------------------------------------------

bool TorchTensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    if (sizes[i] == 1) continue;
    if (sizes[i] == 0) return true;
    if (strides[i] != expected) return false;
    expected *= sizes[i];
  }
  return true;
}

namespace {
// Copies the strided view into dst (numel * item bytes), innermost dimension as one memcpy when
// its stride is 1.
void gather(const TorchTensor& t, std::byte* dst) {
  const size_t item = static_cast<size_t>(dtype_bits(t.dtype) / 8);
  const std::byte* base = t.storage->bytes.data();
  const size_t rank = t.sizes.size();
  if (t.numel() == 0) return;
  if (rank == 0) {
    std::memcpy(dst, base + t.storage_offset * item, item);
    return;
  }
  const int64_t inner = t.sizes[rank - 1];
  const int64_t inner_stride = t.strides[rank - 1];
  std::vector<int64_t> index(rank, 0);
  const uint64_t rows = t.numel() / static_cast<uint64_t>(inner);
  for (uint64_t row = 0; row < rows; ++row) {
    int64_t offset = t.storage_offset;
    for (size_t d = 0; d + 1 < rank; ++d) offset += index[d] * t.strides[d];
    const std::byte* src = base + static_cast<size_t>(offset) * item;
    if (inner_stride == 1) {
      std::memcpy(dst, src, static_cast<size_t>(inner) * item);
      dst += static_cast<size_t>(inner) * item;
    } else {
      for (int64_t j = 0; j < inner; ++j) {
        std::memcpy(dst, src + static_cast<size_t>(j * inner_stride) * item, item);
        dst += item;
      }
    }
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < t.sizes[d]) break;
      index[d] = 0;
    }
  }
}
}  // namespace

Tensor TorchTensor::contiguous() const {
  if (storage == nullptr) throw Error(ErrorCode::InvalidArgument, "tensor has no storage");
  if (is_contiguous()) {
    const size_t item = static_cast<size_t>(dtype_bits(dtype) / 8);
    const auto bytes = storage->bytes.subspan(static_cast<size_t>(storage_offset) * item,
                                              static_cast<size_t>(nbytes()));
    // The storage shared_ptr keeps the mapping (or heap buffer) alive.
    return Tensor::from_owner(dtype, sizes, bytes, storage,
                              storage->zero_copy ? Tensor::Storage::Mapped : Tensor::Storage::Heap);
  }
  return to_owned();
}

Tensor TorchTensor::to_owned() const {
  if (storage == nullptr) throw Error(ErrorCode::InvalidArgument, "tensor has no storage");
  if (is_contiguous()) {
    const size_t item = static_cast<size_t>(dtype_bits(dtype) / 8);
    return Tensor::copy_of(dtype, sizes,
                           storage->bytes.subspan(static_cast<size_t>(storage_offset) * item,
                                                  static_cast<size_t>(nbytes())));
  }
  Tensor out = Tensor::zeros(dtype, sizes);
  gather(*this, out.mutable_bytes().data());
  return out;
}

// --- paths and flattening ---------------------------------------------------------------------

const Value& select_path(const Value& root, std::string_view path) {
  const Value* node = &root;
  std::string_view rest = path;
  while (!rest.empty()) {
    const Value* next = nullptr;
    size_t used = 0;
    if (node->is_dict()) {
      // Longest key first: state-dict keys contain dots themselves.
      size_t end = rest.size();
      while (true) {
        if (const Value* v = node->find(rest.substr(0, end))) {
          next = v;
          used = end;
          break;
        }
        if (end == 0) break;
        const size_t dot = rest.rfind('.', end - 1);
        if (dot == std::string_view::npos) break;
        end = dot;
      }
    } else if (node->is_sequence()) {
      const size_t dot = rest.find('.');
      const std::string_view part = rest.substr(0, dot);
      size_t index = 0;
      bool ok = !part.empty() && part.size() < 19;
      for (char c : part) {
        if (c < '0' || c > '9') ok = false;
        index = index * 10 + static_cast<size_t>(c - '0');
      }
      if (ok && index < node->items().size()) {
        next = &node->items()[index];
        used = part.size();
      }
    }
    if (next == nullptr) {
      const std::string_view part = rest.substr(0, rest.find('.'));
      throw Error(ErrorCode::NotFound,
                  "no '" + std::string(part) + "' at '" +
                      std::string(path.substr(0, path.size() - rest.size())) + "' (a " +
                      std::string(kind_name(node->kind())) + ") while selecting '" +
                      std::string(path) + "'");
    }
    node = next;
    rest = rest.substr(used);
    if (!rest.empty()) rest.remove_prefix(1);  // the dot
  }
  return *node;
}

namespace {
void check_height(int depth) {
  if (depth > kMaxTreeHeight) {
    throw Error(ErrorCode::InvalidArgument,
                "value tree higher than " + std::to_string(kMaxTreeHeight) + " levels");
  }
}

void flatten_into(const Value& v, const std::string& name, std::vector<FlatEntry>& out, int depth) {
  check_height(depth);
  auto join = [&](const std::string& part) { return name.empty() ? part : name + "." + part; };
  if (v.is_dict() && !v.dict_items().empty()) {
    for (const auto& [k, child] : v.dict_items()) {
      flatten_into(child, join(Value::key_to_string(k)), out, depth + 1);
    }
  } else if (v.is_sequence() && !v.items().empty()) {
    const auto& items = v.items();
    for (size_t i = 0; i < items.size(); ++i) flatten_into(items[i], join(std::to_string(i)), out, depth + 1);
  } else {
    out.push_back(FlatEntry{name.empty() && v.is_tensor() ? "tensor" : name, &v});
  }
}
}  // namespace

std::vector<FlatEntry> flatten(const Value& root, std::string_view prefix) {
  std::vector<FlatEntry> out;
  flatten_into(root, std::string(prefix), out, 0);
  std::map<std::string_view, size_t> seen;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!seen.emplace(out[i].name, i).second) {
      throw Error(ErrorCode::InvalidArgument,
                  "two values flatten to the same name '" + out[i].name + "'");
    }
  }
  return out;
}

std::map<std::string, TorchTensor> flatten_tensors(const Value& root, std::string_view prefix) {
  std::map<std::string, TorchTensor> out;
  for (const auto& e : flatten(root, prefix)) {
    if (e.value->is_tensor()) out.emplace(e.name, e.value->as_tensor());
  }
  return out;
}

namespace {
nlohmann::json to_json(const Value& v, int depth) {
  check_height(depth);
  using K = Value::Kind;
  switch (v.kind()) {
    case K::None: return nullptr;
    case K::Bool: return v.as_bool();
    case K::Int: return v.as_int();
    case K::Float: {
      const double d = v.as_float();
      if (!std::isfinite(d)) return float_repr(d);
      return d;
    }
    case K::Str: return v.as_str();
    case K::Bytes: {
      static const char* hex = "0123456789abcdef";
      std::string s;
      for (unsigned char c : v.as_str()) {
        s += hex[c >> 4];
        s += hex[c & 15];
      }
      return nlohmann::json{{"__bytes__", s}};
    }
    case K::List:
    case K::Tuple: {
      auto arr = nlohmann::json::array();
      for (const auto& item : v.items()) arr.push_back(to_json(item, depth + 1));
      return arr;
    }
    case K::Dict: {
      auto obj = nlohmann::json::object();
      for (const auto& [k, child] : v.dict_items()) obj[Value::key_to_string(k)] = to_json(child, depth + 1);
      return obj;
    }
    case K::Tensor: {
      const auto& t = v.as_tensor();
      return nlohmann::json{{"__tensor__", {{"dtype", dtype_name(t.dtype)}, {"shape", t.sizes}}}};
    }
  }
  return nullptr;
}
}  // namespace

std::string value_to_json(const Value& value) {
  return to_json(value, 0).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace ckptio::pt
