#include "inspect_torch.h"

#include <fmt/core.h>

#include <map>
#include <nlohmann/json.hpp>

#include "ckptio/torch_pickle.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace {

using pt::TorchTensor;
using pt::Value;

// Scalar-only sequences this short print on one line; longer ones (e.g. param id lists) too,
// cut at this many characters.
constexpr size_t kInlineWidth = 100;

bool all_scalars(const Value& v) {
  for (const auto& item : v.items()) {
    if (item.is_tensor() || item.is_dict() || item.is_sequence()) return false;
  }
  return true;
}

std::string tensor_line(const TorchTensor& t, const std::map<const pt::TorchStorage*, size_t>& users) {
  std::string s = fmt::format("tensor {} {}", dtype_name(t.dtype), shape_to_string(t.sizes));
  if (!t.is_contiguous()) s += fmt::format(" stride {}", shape_to_string(t.strides));
  if (t.storage_offset != 0) s += fmt::format(" offset {}", t.storage_offset);
  s += fmt::format(" storage '{}'", printable(t.storage->key));
  const auto it = users.find(t.storage.get());
  if (it != users.end() && it->second > 1) s += fmt::format(" (shared by {})", it->second);
  if (t.is_parameter) s += " Parameter";
  if (t.requires_grad) s += " requires_grad";
  return s;
}

void print_tree(const Value& v, const std::string& label, int indent,
                const std::map<const pt::TorchStorage*, size_t>& users) {
  const std::string pad(static_cast<size_t>(indent) * 2, ' ');
  const std::string head = pad + printable(label) + (label.empty() ? "" : ": ");
  if (v.is_tensor()) {
    fmt::print("{}{}\n", head, tensor_line(v.as_tensor(), users));
  } else if (v.is_dict() && !v.dict_items().empty()) {
    fmt::print("{}dict ({} items)\n", head, v.dict_items().size());
    for (const auto& [k, child] : v.dict_items()) print_tree(child, Value::key_to_string(k), indent + 1, users);
  } else if (v.is_sequence() && !v.items().empty() && !all_scalars(v)) {
    fmt::print("{}{} ({} items)\n", head, pt::kind_name(v.kind()), v.items().size());
    for (size_t i = 0; i < v.items().size(); ++i) print_tree(v.items()[i], std::to_string(i), indent + 1, users);
  } else {
    std::string text = pt::value_to_json(v);
    if (text.size() > kInlineWidth) text = text.substr(0, kInlineWidth) + fmt::format("... ({} items)", v.is_sequence() ? v.items().size() : 0);
    fmt::print("{}{}{}\n", head, printable(text),
               v.kind() == Value::Kind::Tuple ? " (tuple)" : v.kind() == Value::Kind::Bytes ? " (bytes)" : "");
  }
}

}  // namespace

int inspect_torch(const std::filesystem::path& path, bool json) {
  const pt::TorchFile file = pt::load_torch_file(path);
  const auto leaves = pt::flatten(file.root);
  std::map<const pt::TorchStorage*, size_t> users;
  uint64_t tensor_bytes = 0;
  size_t tensors = 0;
  for (const auto& leaf : leaves) {
    if (!leaf.value->is_tensor()) continue;
    ++users[leaf.value->as_tensor().storage.get()];
    tensor_bytes += leaf.value->as_tensor().nbytes();
    ++tensors;
  }
  uint64_t storage_bytes = 0;
  for (const auto& s : file.storages) storage_bytes += s->bytes.size();
  const char* format = file.format == pt::TorchFormat::Zip ? "torch-zip" : "torch-legacy";
  if (json) {
    nlohmann::ordered_json out;
    out["format"] = format;
    out["archive_prefix"] = file.archive_prefix;
    out["version"] = file.version;
    out["byteorder"] = file.big_endian ? "big" : "little";
    out["file_size"] = file.file_size;
    out["tree"] = nlohmann::ordered_json::parse(pt::value_to_json(file.root));
    out["tensors"] = nlohmann::ordered_json::array();
    for (const auto& leaf : leaves) {
      if (!leaf.value->is_tensor()) continue;
      const TorchTensor& t = leaf.value->as_tensor();
      out["tensors"].push_back({{"name", leaf.name},
                                {"dtype", dtype_name(t.dtype)},
                                {"shape", t.sizes},
                                {"stride", t.strides},
                                {"storage_offset", t.storage_offset},
                                {"storage", t.storage->key},
                                {"nbytes", t.nbytes()},
                                {"contiguous", t.is_contiguous()},
                                {"parameter", t.is_parameter},
                                {"requires_grad", t.requires_grad}});
    }
    out["storages"] = nlohmann::ordered_json::array();
    for (const auto& s : file.storages) {
      out["storages"].push_back({{"key", s->key}, {"dtype", dtype_name(s->dtype)}, {"numel", s->numel},
                                 {"nbytes", s->bytes.size()}, {"users", users[s.get()]}});
    }
    out["total_tensor_bytes"] = tensor_bytes;
    fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    return 0;
  }
  fmt::print("file: {}\nformat: {}", printable(path.string()), format);
  if (file.format == pt::TorchFormat::Zip) {
    fmt::print(" (folder '{}', version {})", printable(file.archive_prefix), file.version);
  }
  fmt::print(", {} byte order, {} bytes\n", file.big_endian ? "big" : "little", file.file_size);
  fmt::print("tree:\n");
  print_tree(file.root, "", 1, users);
  size_t shared = 0;
  for (const auto& [s, n] : users) shared += n > 1 ? 1 : 0;
  fmt::print("total: {} tensors, {} bytes as tensors; {} storages, {} bytes ({} shared)\n", tensors,
             tensor_bytes, file.storages.size(), storage_bytes, shared);
  return 0;
}

}  // namespace ckptio::cli
