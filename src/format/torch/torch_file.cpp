// The two containers torch.save writes around its pickle: the zip archive and the legacy stream.
#include <algorithm>
#include <cstring>
#include <map>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"
#include "format/torch/storage_fill.h"
#include "format/torch/unpickler.h"
#include "format/torch/zip_reader.h"

namespace ckptio::pt {

namespace {

// torch.save's legacy stream starts with this pickle: PROTO 2, LONG1 0x1950a86a20f9469cfc6c, STOP.
constexpr unsigned char kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                          0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
constexpr int64_t kLegacyProtocolVersion = 1001;
// The zip "version" records torch has written so far are small integers (1.13 writes 3).
constexpr int kMaxZipVersion = 20;

bool starts_with(std::span<const std::byte> bytes, const void* prefix, size_t n) {
  return bytes.size() >= n && std::memcmp(bytes.data(), prefix, n) == 0;
}

[[noreturn]] void fail(ErrorCode code, std::string_view source, const std::string& msg) {
  throw Error(code, std::string(source) + ": " + msg);
}

// Locations only say where torch would put the storage; ckptio always reads into host memory, but
// anything other than a plain device string is a malformed file.
void check_location(std::string_view source, const std::string& location) {
  static const char* devices[] = {"cpu", "cuda", "mps", "xpu", "hpu", "npu", "xla", "privateuseone"};
  const std::string type = location.substr(0, location.find(':'));
  bool known = false;
  for (const char* d : devices) known = known || type == d;
  if (location == "meta") fail(ErrorCode::Unsupported, source, "storage on the 'meta' device has no data");
  std::string_view index = location.size() > type.size() ? std::string_view(location).substr(type.size() + 1) : "";
  bool index_ok = location.size() == type.size() || (!index.empty() && index.size() <= 4);
  for (char c : index) index_ok = index_ok && c >= '0' && c <= '9';
  if (!known || !index_ok) fail(ErrorCode::Corrupt, source, "storage location '" + location + "' is not a device");
}

uint64_t item_size(DType dtype) { return static_cast<uint64_t>(dtype_bits(dtype) / 8); }

uint64_t storage_bytes(std::string_view source, const StorageRef& ref) {
  uint64_t n;
  if (__builtin_mul_overflow(ref.numel, ref.untyped ? 1 : item_size(ref.dtype), &n)) {
    fail(ErrorCode::Corrupt, source, "storage '" + ref.key + "' size overflows");
  }
  return n;
}

uint64_t saturating_limit(uint64_t factor, uint64_t file_size, uint64_t floor) {
  uint64_t scaled, sum;
  if (__builtin_mul_overflow(factor, file_size, &scaled) || __builtin_add_overflow(scaled, floor, &sum)) {
    return UINT64_MAX;
  }
  return sum;
}

// Everything a walk of the tree may materialise is proportional to the file's size.
UnpickleOptions unpickle_options(const TorchLoadOptions& o, uint64_t file_size) {
  return UnpickleOptions{std::min(o.max_depth, kMaxTreeHeight),
                         saturating_limit(o.expansion_factor, file_size, o.max_expanded_bytes),
                         saturating_limit(o.expansion_factor, file_size, o.max_expanded_nodes)};
}

std::string trimmed(std::span<const std::byte> bytes) {
  std::string s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

TorchFile load_zip(std::span<const std::byte> bytes, std::string_view source,
                   const std::shared_ptr<const void>& owner, const TorchLoadOptions& options) {
  const ZipArchive zip = ZipArchive::parse(bytes, source);
  if (zip.entries().empty()) fail(ErrorCode::Corrupt, source, "zip archive has no entries");
  TorchFile file;
  file.format = TorchFormat::Zip;
  file.file_size = bytes.size();
  const std::string& first = zip.entries().front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0) {
    fail(ErrorCode::Corrupt, source, "zip entry '" + first + "' is not inside a top folder");
  }
  file.archive_prefix = first.substr(0, slash);
  const std::string prefix = file.archive_prefix + "/";
  for (const auto& e : zip.entries()) {
    if (e.name.compare(0, prefix.size(), prefix) != 0) {
      fail(ErrorCode::Corrupt, source, "zip entry '" + e.name + "' is outside the top folder '" + prefix + "'");
    }
    if (e.name == prefix + "constants.pkl" || e.name.compare(0, prefix.size() + 5, prefix + "code/") == 0) {
      fail(ErrorCode::Unsupported, source, "a TorchScript archive (torch.jit.save), not a torch.save file");
    }
  }
  auto record = [&](const std::string& name) -> const ZipEntry* {
    const ZipEntry* e = zip.find(prefix + name);
    if (e && options.verify_crc) zip.verify_crc(*e);
    return e;
  };

  const ZipEntry* version = record("version");
  if (!version) version = record(".data/version");
  if (!version) fail(ErrorCode::Corrupt, source, "no 'version' record in the archive");
  {
    const std::string text = trimmed(zip.data(*version));
    int v = 0;
    bool ok = !text.empty() && text.size() <= 4;
    for (char c : text) {
      ok = ok && c >= '0' && c <= '9';
      if (ok) v = v * 10 + (c - '0');
    }
    if (!ok) fail(ErrorCode::Corrupt, source, "'version' record is not a number");
    if (v < 1 || v > kMaxZipVersion) {
      fail(ErrorCode::Unsupported, source, "archive format version " + std::to_string(v) +
                                               " (supported: 1.." + std::to_string(kMaxZipVersion) + ")");
    }
    file.version = v;
  }
  if (const ZipEntry* order = record("byteorder")) {
    const std::string text = trimmed(zip.data(*order));
    if (text == "big") {
      file.big_endian = true;
    } else if (text != "little") {
      fail(ErrorCode::Corrupt, source, "'byteorder' record is '" + text.substr(0, 16) + "'");
    }
  }
  const ZipEntry* pickle = record("data.pkl");
  if (!pickle) fail(ErrorCode::Corrupt, source, "no 'data.pkl' record in the archive");

  std::map<std::string, std::shared_ptr<const TorchStorage>> by_key;
  std::vector<PendingStorage> pending;
  const StorageResolver resolve = [&](const StorageRef& ref) -> std::shared_ptr<const TorchStorage> {
    check_location(source, ref.location);
    if (ref.has_view) fail(ErrorCode::Corrupt, source, "storage views exist only in the legacy format");
    if (const auto it = by_key.find(ref.key); it != by_key.end()) {
      if (it->second->dtype != ref.dtype || it->second->numel != ref.numel) {
        fail(ErrorCode::Corrupt, source, "storage '" + ref.key + "' is referenced with two different types or sizes");
      }
      return it->second;
    }
    if (ref.key.empty() || ref.key.find('/') != std::string::npos || ref.key == "..") {
      fail(ErrorCode::Corrupt, source, "bad storage key '" + ref.key + "'");
    }
    const ZipEntry* e = zip.find(prefix + "data/" + ref.key);
    if (!e) fail(ErrorCode::Corrupt, source, "storage record 'data/" + ref.key + "' is missing");
    const uint64_t want = storage_bytes(source, ref);
    if (e->size != want) {
      fail(ErrorCode::Corrupt, source, "storage record 'data/" + ref.key + "' holds " +
                                           std::to_string(e->size) + " bytes but its " +
                                           std::string(dtype_name(ref.dtype)) + " storage declares " +
                                           std::to_string(ref.numel) + " elements (" +
                                           std::to_string(want) + " bytes)");
    }
    auto s = std::make_shared<TorchStorage>();
    s->key = ref.key;
    s->dtype = ref.dtype;
    s->numel = ref.numel;
    pending.push_back(PendingStorage{s, zip.data(*e), owner, options.verify_crc, e->crc32,
                                     std::string(source) + ": zip record '" + e->name + "'"});
    by_key.emplace(ref.key, s);
    file.storages.push_back(s);
    return s;
  };
  const std::string pickle_source = std::string(source) + " (" + pickle->name + ")";
  const auto result = unpickle(zip.data(*pickle), 0, pickle_source, resolve,
                             unpickle_options(options, bytes.size()));
  if (result.end != pickle->size) {
    fail(ErrorCode::Corrupt, source, "bytes after the end of data.pkl's pickle");
  }
  fill_storages(pending, file.big_endian, options.owned, options.threads);
  file.root = result.value;
  return file;
}

TorchFile load_legacy(std::span<const std::byte> bytes, std::string_view source,
                      const std::shared_ptr<const void>& owner, const TorchLoadOptions& options) {
  TorchFile file;
  file.format = TorchFormat::Legacy;
  file.file_size = bytes.size();
  const auto opts = unpickle_options(options, bytes.size());
  const StorageResolver no_storages = [&](const StorageRef&) -> std::shared_ptr<const TorchStorage> {
    fail(ErrorCode::Corrupt, source, "storage reference outside the object pickle");
  };
  size_t pos = sizeof kLegacyMagic;
  auto protocol = unpickle(bytes, pos, source, no_storages, opts);
  pos = protocol.end;
  if (protocol.value.kind() != Value::Kind::Int || protocol.value.as_int() != kLegacyProtocolVersion) {
    fail(ErrorCode::Unsupported, source, "legacy protocol version is not 1001");
  }
  file.version = static_cast<int>(kLegacyProtocolVersion);
  auto sys_info = unpickle(bytes, pos, source, no_storages, opts);
  pos = sys_info.end;
  if (const Value* le = sys_info.value.find("little_endian");
      le != nullptr && le->kind() == Value::Kind::Bool) {
    file.big_endian = !le->as_bool();
  } else {
    fail(ErrorCode::Corrupt, source, "legacy sys_info has no little_endian flag");
  }

  struct View {
    std::shared_ptr<TorchStorage> storage;
    std::string root;
    uint64_t offset;
  };
  std::map<std::string, std::shared_ptr<TorchStorage>> roots;
  std::map<std::string, std::shared_ptr<TorchStorage>> views_by_key;
  std::vector<View> views;
  const StorageResolver resolve = [&](const StorageRef& ref) -> std::shared_ptr<const TorchStorage> {
    check_location(source, ref.location);
    if (ref.untyped) fail(ErrorCode::Corrupt, source, "untyped storage in a legacy file");
    std::shared_ptr<TorchStorage>& root = roots[ref.key];
    if (!root) {
      root = std::make_shared<TorchStorage>();
      root->key = ref.key;
      root->dtype = ref.dtype;
      root->numel = ref.numel;
      // Its bytes follow the pickle; one larger than the whole file is refused before any tensor
      // view of it is counted.
      if (storage_bytes(source, ref) > bytes.size()) {
        fail(ErrorCode::Corrupt, source, "storage '" + ref.key + "' of " + std::to_string(ref.numel) +
                                             " elements runs past the end of the file");
      }
    } else if (root->dtype != ref.dtype || root->numel != ref.numel) {
      fail(ErrorCode::Corrupt, source, "storage '" + ref.key + "' is referenced with two different types or sizes");
    }
    if (!ref.has_view) {
      if (std::find(file.storages.begin(), file.storages.end(), root) == file.storages.end()) {
        file.storages.push_back(root);
      }
      return root;
    }
    uint64_t view_end;
    if (__builtin_add_overflow(ref.view_offset, ref.view_numel, &view_end) || view_end > ref.numel) {
      fail(ErrorCode::Corrupt, source, "storage view '" + ref.view_key + "' reaches past storage '" + ref.key + "'");
    }
    std::shared_ptr<TorchStorage>& view = views_by_key[ref.view_key];
    if (!view) {
      view = std::make_shared<TorchStorage>();
      view->key = ref.view_key;
      view->dtype = ref.dtype;
      view->numel = ref.view_numel;
      views.push_back(View{view, ref.key, ref.view_offset});
      file.storages.push_back(view);
    }
    return view;
  };
  auto object = unpickle(bytes, pos, source, resolve, opts);
  pos = object.end;
  auto keys = unpickle(bytes, pos, source, no_storages, opts);
  pos = keys.end;
  if (!keys.value.is_sequence()) fail(ErrorCode::Corrupt, source, "legacy storage key list is not a list");

  std::map<std::string, bool> filled;
  std::vector<PendingStorage> pending;
  for (const Value& key_value : keys.value.items()) {
    if (key_value.kind() != Value::Kind::Str) fail(ErrorCode::Corrupt, source, "legacy storage key is not a str");
    const std::string& key = key_value.as_str();
    const auto it = roots.find(key);
    if (it == roots.end()) fail(ErrorCode::Corrupt, source, "legacy data for unreferenced storage '" + key + "'");
    if (filled[key]) fail(ErrorCode::Corrupt, source, "legacy storage '" + key + "' stored twice");
    filled[key] = true;
    TorchStorage& s = *it->second;
    if (bytes.size() - pos < 8) fail(ErrorCode::Corrupt, source, "legacy file truncated at byte " + std::to_string(pos));
    uint64_t count = 0;
    for (int i = 7; i >= 0; --i) {
      const int byte = file.big_endian ? 7 - i : i;
      count = (count << 8) | static_cast<uint8_t>(bytes[pos + static_cast<size_t>(byte)]);
    }
    pos += 8;
    if (count != s.numel) {
      fail(ErrorCode::Corrupt, source, "legacy storage '" + key + "' holds " + std::to_string(count) +
                                           " elements but is declared with " + std::to_string(s.numel));
    }
    const uint64_t n = s.numel * item_size(s.dtype);
    if (n > bytes.size() - pos) {
      fail(ErrorCode::Corrupt, source, "legacy storage '" + key + "' at byte " + std::to_string(pos) +
                                           " runs past the end of the file");
    }
    pending.push_back(PendingStorage{it->second, bytes.subspan(pos, static_cast<size_t>(n)), owner,
                                     false, 0, std::string(source) + ": legacy storage '" + key + "'"});
    pos += static_cast<size_t>(n);
  }
  fill_storages(pending, file.big_endian, options.owned, options.threads);
  for (const auto& [key, root] : roots) {
    if (!filled[key]) fail(ErrorCode::Corrupt, source, "legacy storage '" + key + "' has no data");
  }
  for (const View& v : views) {
    const TorchStorage& root = *roots[v.root];
    const uint64_t item = item_size(root.dtype);
    v.storage->bytes = root.bytes.subspan(static_cast<size_t>(v.offset * item),
                                          static_cast<size_t>(v.storage->numel * item));
    v.storage->owner = root.owner;
    v.storage->zero_copy = root.zero_copy;
  }
  file.root = object.value;
  return file;
}

}  // namespace

bool looks_like_torch_file(std::span<const std::byte> head) {
  return starts_like_zip(head) || starts_with(head, kLegacyMagic, sizeof kLegacyMagic);
}

TorchFile parse_torch_bytes(std::span<const std::byte> bytes, std::string_view source,
                            std::shared_ptr<const void> owner, const TorchLoadOptions& options) {
  if (starts_like_zip(bytes)) return load_zip(bytes, source, owner, options);
  if (starts_with(bytes, kLegacyMagic, sizeof kLegacyMagic)) return load_legacy(bytes, source, owner, options);
  if (bytes.size() >= 262 && std::memcmp(bytes.data() + 257, "ustar", 5) == 0) {
    fail(ErrorCode::Unsupported, source,
         "the legacy tar format of torch.save (PyTorch < 0.4) is not supported: its loader runs "
         "set_() with file-supplied offsets");
  }
  if (starts_with(bytes, "PYTORCH1", 8)) {
    fail(ErrorCode::Unsupported, source, "an old TorchScript (PYTORCH1) file");
  }
  if (!bytes.empty() && bytes[0] == std::byte{0x80}) {
    // A bare pickle: interpret it under the same rules so that a hostile one is reported for
    // what it is, then refuse it because torch.save never writes one.
    const StorageResolver no_storages = [&](const StorageRef&) -> std::shared_ptr<const TorchStorage> {
      fail(ErrorCode::Corrupt, source, "storage reference in a bare pickle");
    };
    unpickle(bytes, 0, source, no_storages, unpickle_options(options, bytes.size()));
    fail(ErrorCode::Corrupt, source, "a bare pickle, not a torch.save file (no zip archive, no legacy magic number)");
  }
  fail(ErrorCode::Corrupt, source, "not a PyTorch file (neither a zip archive nor a legacy torch.save stream)");
}

TorchFile load_torch_file(const std::filesystem::path& path, const TorchLoadOptions& options) {
  io::Env& env = options.env ? *options.env : io::Env::posix();
  const std::shared_ptr<const io::MappedFile> map = env.map_read(path);
  return parse_torch_bytes(map->bytes(), path.string(), map, options);
}

std::map<std::string, Tensor> load_torch_state_dict(const std::filesystem::path& path,
                                                    std::string_view key,
                                                    const TorchLoadOptions& options) {
  const TorchFile file = load_torch_file(path, options);
  const Value* selected = &file.root;
  try {
    selected = &select_path(file.root, key);
  } catch (const Error& e) {
    throw e.annotate(path.string());
  }
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : flatten_tensors(*selected)) out.emplace(name, t.contiguous());
  return out;
}

}  // namespace ckptio::pt
