// Parses and validates a safetensors header. Everything is checked before a tensor byte is handed
// out: JSON syntax and UTF-8 (simdjson, which validates at GB/s, so opening a 10,000-tensor file
// costs milliseconds), the fixed grammar with duplicate keys rejected, dtype names, shape
// arithmetic, and that the data_offsets tile the data section exactly.
#include <algorithm>
#include <optional>
#include <simdjson.h>
#include <unordered_set>
#include <string>

#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "format/safetensors/header_length.h"

namespace ckptio {
namespace {

constexpr std::string_view kMetadataKey = "__metadata__";

// The grammar is fixed: root object -> "__metadata__" (object of strings) or tensor entries
// (objects with exactly dtype, shape, data_offsets). Nothing legal nests deeper than 3, so the
// parser refuses anything deeper before building it.
constexpr size_t kMaxDepth = 4;

std::string json_kind(simdjson::dom::element_type t) {
  using T = simdjson::dom::element_type;
  switch (t) {
    case T::ARRAY: return "an array";
    case T::OBJECT: return "an object";
    case T::INT64:
    case T::UINT64: return "an integer";
    case T::DOUBLE: return "a non-integer number";
    case T::STRING: return "a string";
    case T::BOOL: return "a boolean";
    case T::NULL_VALUE: return "null";
  }
  return "a value";
}

// A non-negative integer array item; `what` names it in errors.
std::optional<std::string> read_uint(simdjson::dom::element e, uint64_t& out) {
  using T = simdjson::dom::element_type;
  if (e.type() == T::UINT64) {
    out = e.get_uint64().value_unsafe();
    return std::nullopt;
  }
  if (e.type() == T::INT64) {
    const int64_t v = e.get_int64().value_unsafe();
    if (v < 0) return "negative number " + std::to_string(v);
    out = static_cast<uint64_t>(v);
    return std::nullopt;
  }
  return "expected a non-negative integer, found " + json_kind(e.type());
}

[[noreturn]] void corrupt(std::string_view source, const std::string& msg) {
  throw Error(ErrorCode::Corrupt, "'" + std::string(source) + "': " + msg);
}

std::string byte_range(const SafetensorsHeader& h, const TensorInfo& t) {
  return "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
         ") (file bytes " + std::to_string(h.data_start + t.begin) + ".." +
         std::to_string(h.data_start + t.end) + ")";
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::string_view header_json, uint64_t data_bytes,
                                           std::string_view source,
                                           const SafetensorsLimits& limits) {
  SafetensorsHeader h;
  h.header_bytes = header_json.size();
  h.data_start = 8 + header_json.size();
  h.data_bytes = data_bytes;

  // JSON parsers disagree on a NUL (some stop there) and a UTF-8 byte-order mark (some skip it);
  // serde_json (the reference) rejects both, and so must we, or a NUL-padded header would parse
  // here and nowhere else.
  if (const auto nul = header_json.find('\0'); nul != std::string_view::npos) {
    corrupt(source, "header: NUL byte at file byte " + std::to_string(8 + nul) +
                        " (headers are padded with spaces, never NUL)");
  }
  if (header_json.starts_with("\xEF\xBB\xBF")) {
    corrupt(source, "header: starts with a UTF-8 byte-order mark at file byte 8");
  }

  simdjson::dom::parser parser;
  if (auto err = parser.allocate(std::max<size_t>(header_json.size(), 64), kMaxDepth)) {
    throw Error(ErrorCode::Internal, std::string("JSON parser allocation failed: ") +
                                         simdjson::error_message(err));
  }
  // simdjson needs SIMDJSON_PADDING readable bytes after the text; the copy also detaches parsing
  // from a mapping that could change under us.
  const simdjson::padded_string padded(header_json.data(), header_json.size());
  simdjson::dom::element root;
  if (auto err = parser.parse(padded).get(root)) {
    std::string why = simdjson::error_message(err);
    if (err == simdjson::DEPTH_ERROR) why = "JSON nested deeper than a safetensors header can be";
    corrupt(source, "header: invalid JSON: " + why);
  }
  simdjson::dom::object root_object;
  if (root.get(root_object)) {
    corrupt(source, "header: expected the header to be a JSON object, found " +
                        json_kind(root.type()));
  }
  bool seen_metadata = false;
  for (simdjson::dom::key_value_pair member : root_object) {
    const std::string_view key = member.key;
    if (key == kMetadataKey) {
      if (seen_metadata) corrupt(source, "header: duplicate \"__metadata__\"");
      seen_metadata = true;
      simdjson::dom::object meta;
      if (member.value.get(meta)) {
        corrupt(source, "header: expected \"__metadata__\" to be an object of strings, found " +
                            json_kind(member.value.type()));
      }
      h.metadata.emplace();
      for (simdjson::dom::key_value_pair kv : meta) {
        std::string_view value;
        if (kv.value.get(value)) {
          corrupt(source, "header: expected metadata value \"" + std::string(kv.key) +
                              "\" to be a string, found " + json_kind(kv.value.type()) +
                              " in \"__metadata__\"");
        }
        if (!h.metadata->emplace(std::string(kv.key), std::string(value)).second) {
          corrupt(source, "header: duplicate metadata key \"" + std::string(kv.key) + "\"");
        }
      }
      continue;
    }
    if (h.tensors.size() >= limits.max_tensors) {
      corrupt(source, "header: more than " + std::to_string(limits.max_tensors) + " tensors");
    }
    // Built only on the error path: a header with 10,000 tensors must not pay for messages.
    const auto where = [key] { return " in tensor \"" + std::string(key) + "\""; };
    simdjson::dom::object entry;
    if (member.value.get(entry)) {
      corrupt(source, "header: expected tensor \"" + std::string(key) + "\" to be an object, found " +
                          json_kind(member.value.type()));
    }
    TensorInfo info;
    info.name = std::string(key);
    unsigned seen = 0;
    for (simdjson::dom::key_value_pair field : entry) {
      const std::string_view f = field.key;
      unsigned bit = f == "dtype" ? 1u : f == "shape" ? 2u : f == "data_offsets" ? 4u : 0u;
      if (bit == 0) corrupt(source, "header: unknown field \"" + std::string(f) + "\"" + where());
      if (seen & bit) corrupt(source, "header: duplicate field \"" + std::string(f) + "\"" + where());
      seen |= bit;
      if (bit == 1) {
        std::string_view name;
        if (field.value.get(name)) {
          corrupt(source, "header: expected \"dtype\" to be a string, found " +
                              json_kind(field.value.type()) + where());
        }
        const auto d = parse_dtype(name);
        if (!d) {
          throw Error(ErrorCode::Unsupported, "'" + std::string(source) + "': unknown dtype \"" +
                                                  std::string(name) + "\"" + where());
        }
        info.dtype = *d;
        continue;
      }
      simdjson::dom::array items;
      if (field.value.get(items)) {
        corrupt(source, "header: expected \"" + std::string(f) + "\" to be an array of integers, found " +
                            json_kind(field.value.type()) + where());
      }
      if (bit == 2) {
        for (simdjson::dom::element item : items) {
          uint64_t v = 0;
          if (auto why = read_uint(item, v)) corrupt(source, "header: shape: " + *why + where());
          if (v > static_cast<uint64_t>(INT64_MAX)) {
            corrupt(source, "header: dimension " + std::to_string(v) + " exceeds int64" + where());
          }
          if (static_cast<int>(info.shape.size()) >= limits.max_rank) {
            corrupt(source, "header: rank above " + std::to_string(limits.max_rank) + where());
          }
          info.shape.push_back(static_cast<int64_t>(v));
        }
      } else {
        if (items.size() != 2) {
          corrupt(source, "header: data_offsets must have exactly 2 items, has " +
                              std::to_string(items.size()) + where());
        }
        uint64_t* slots[2] = {&info.begin, &info.end};
        size_t i = 0;
        for (simdjson::dom::element item : items) {
          if (auto why = read_uint(item, *slots[i++])) {
            corrupt(source, "header: data_offsets: " + *why + where());
          }
        }
      }
    }
    if (!(seen & 1u)) corrupt(source, "header: missing \"dtype\"" + where());
    if (!(seen & 2u)) corrupt(source, "header: missing \"shape\"" + where());
    if (!(seen & 4u)) corrupt(source, "header: missing \"data_offsets\"" + where());
    h.tensors.push_back(std::move(info));
  }

  for (const TensorInfo& t : h.tensors) {
    uint64_t want;
    try {
      want = tensor_nbytes(t.dtype, t.shape);
    } catch (const Error& e) {
      corrupt(source, "tensor \"" + t.name + "\": " + e.message());
    }
    if (t.end < t.begin) {
      corrupt(source, "tensor \"" + t.name + "\": " + byte_range(h, t) + " ends before it begins");
    }
    if (t.end - t.begin != want) {
      corrupt(source, "tensor \"" + t.name + "\": " + std::string(dtype_name(t.dtype)) + " " +
                          shape_to_string(t.shape) + " needs " + std::to_string(want) +
                          " bytes but " + byte_range(h, t) + " holds " +
                          std::to_string(t.end - t.begin));
    }
  }
  {
    std::unordered_set<std::string_view> names;
    names.reserve(h.tensors.size());
    for (const TensorInfo& t : h.tensors) {
      if (!names.insert(t.name).second) {
        corrupt(source, "header: duplicate tensor name \"" + t.name + "\"");
      }
    }
  }
  // Data order; zero-size tensors sort before a tensor that starts at the same offset, which is
  // where the reference writer puts them.
  const auto data_order = [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  };
  // Writers (ours and the reference) emit entries in data order already.
  if (!std::is_sorted(h.tensors.begin(), h.tensors.end(), data_order)) {
    std::stable_sort(h.tensors.begin(), h.tensors.end(), data_order);
  }
  uint64_t expected = 0;
  for (const TensorInfo& t : h.tensors) {
    if (t.begin != expected) {
      corrupt(source, "tensor \"" + t.name + "\": " + byte_range(h, t) +
                          (t.begin < expected ? " overlaps the previous tensor"
                                              : " leaves a hole after offset " +
                                                    std::to_string(expected)));
    }
    expected = t.end;
  }
  if (expected != data_bytes) {
    corrupt(source, expected < data_bytes
                        ? "data section has " + std::to_string(data_bytes - expected) +
                              " bytes after the last tensor (file bytes " +
                              std::to_string(h.data_start + expected) + ".." +
                              std::to_string(h.data_start + data_bytes) + " are not indexed)"
                        : "file is truncated: tensors need " + std::to_string(expected) +
                              " data bytes, file has " + std::to_string(data_bytes));
  }
  return h;
}

// Reads N from the first 8 bytes and checks it against the file size and the limit.
uint64_t checked_header_length(std::span<const std::byte> first8, uint64_t file_size,
                               std::string_view source, const SafetensorsLimits& limits) {
  if (file_size < 8) {
    corrupt(source, "file is " + std::to_string(file_size) +
                        " bytes, too small for the 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(first8[static_cast<size_t>(i)]);
  if (n > limits.max_header_bytes) {
    corrupt(source, "header length " + std::to_string(n) + " exceeds the limit of " +
                        std::to_string(limits.max_header_bytes) + " bytes");
  }
  if (n > file_size - 8) {
    corrupt(source, "header length " + std::to_string(n) + " runs past the end of the " +
                        std::to_string(file_size) + "-byte file");
  }
  return n;
}

SafetensorsHeader parse_safetensors(std::span<const std::byte> file, std::string_view source,
                                    const SafetensorsLimits& limits) {
  const uint64_t n = checked_header_length(file.first(std::min<size_t>(8, file.size())), file.size(),
                                           source, limits);
  const std::string_view header(reinterpret_cast<const char*>(file.data()) + 8, n);
  return parse_safetensors_header(header, file.size() - 8 - n, source, limits);
}

}  // namespace ckptio
