// Parses and validates a safetensors header. Everything is checked before a tensor byte is handed
// out: JSON shape and types (streamed through a SAX handler, so duplicate keys, nesting depth and
// entry counts are caught while parsing rather than after building a DOM), dtype names, shape
// arithmetic, and that the data_offsets tile the data section exactly.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "format/safetensors/header_length.h"

namespace ckptio {
namespace {

using json = nlohmann::json;

constexpr std::string_view kMetadataKey = "__metadata__";

// Which value the handler expects next.
enum class Slot : uint8_t {
  Root,           // the top-level object
  RootMember,     // a value of the root object: metadata object or tensor entry object
  MetadataValue,  // a string inside __metadata__
  EntryField,     // dtype / shape / data_offsets inside a tensor entry
  ShapeItem,      // an integer inside "shape"
  OffsetItem,     // an integer inside "data_offsets"
};

struct PendingEntry {
  TensorInfo info;
  bool has_dtype = false;
  bool has_shape = false;
  int offsets_seen = -1;  // -1: field absent; else number of items read
};

class HeaderSax final : public nlohmann::json_sax<json> {
 public:
  HeaderSax(std::string_view source, const SafetensorsLimits& limits, SafetensorsHeader& out)
      : source_(source), limits_(limits), out_(out) {}

  bool null() override { return unexpected("null"); }
  bool boolean(bool) override { return unexpected("a boolean"); }
  bool number_integer(number_integer_t v) override {
    if (v < 0) return fail("negative number " + std::to_string(v) + where());
    return number(static_cast<uint64_t>(v));
  }
  bool number_unsigned(number_unsigned_t v) override { return number(v); }
  bool number_float(number_float_t, const string_t& text) override {
    return fail("non-integer number " + text + where());
  }
  bool binary(binary_t&) override { return unexpected("binary data"); }

  bool string(string_t& s) override {
    if (slot_ == Slot::MetadataValue) {
      (*out_.metadata)[member_] = s;
      return true;
    }
    if (slot_ == Slot::EntryField && field_ == "dtype") {
      auto d = parse_dtype(s);
      if (!d) {
        unsupported_ = true;
        return fail("unknown dtype \"" + s + "\"" + where());
      }
      entry_.info.dtype = *d;
      entry_.has_dtype = true;
      return true;
    }
    return unexpected("a string");
  }

  bool start_object(std::size_t) override {
    if (slot_ == Slot::Root) {
      slot_ = Slot::RootMember;
      root_open_ = true;
      return true;
    }
    if (slot_ == Slot::RootMember && in_member_value_) {
      if (member_ == kMetadataKey) {
        out_.metadata.emplace();
        slot_ = Slot::MetadataValue;
      } else {
        entry_ = PendingEntry{};
        entry_.info.name = member_;
        fields_seen_ = 0;
        slot_ = Slot::EntryField;
      }
      return true;
    }
    return unexpected("an object");
  }

  bool key(string_t& k) override {
    switch (slot_) {
      case Slot::RootMember:
        if (k == kMetadataKey) {
          if (seen_metadata_) return fail("duplicate \"__metadata__\"");
          seen_metadata_ = true;
        } else if (++tensor_count_ > limits_.max_tensors) {
          return fail("more than " + std::to_string(limits_.max_tensors) + " tensors");
        }
        // Duplicate tensor names are found after parsing by sorting the names (no per-key set).
        member_ = std::move(k);
        in_member_value_ = true;
        return true;
      case Slot::MetadataValue:
        if (out_.metadata->count(k) != 0) return fail("duplicate metadata key \"" + k + "\"");
        (*out_.metadata)[k];  // reserve; value set by string()
        member_ = k;
        return true;
      case Slot::EntryField:
        {
          unsigned bit;
          if (k == "dtype") bit = 1;
          else if (k == "shape") bit = 2;
          else if (k == "data_offsets") bit = 4;
          else return fail("unknown field \"" + k + "\"" + where());
          if (fields_seen_ & bit) return fail("duplicate field \"" + k + "\"" + where());
          fields_seen_ |= bit;
          field_ = std::move(k);
        }
        return true;
      default:
        return fail("unexpected key \"" + k + "\"");
    }
  }

  bool end_object() override {
    if (slot_ == Slot::MetadataValue) {
      slot_ = Slot::RootMember;
      in_member_value_ = false;
      member_ = std::string(kMetadataKey);
      return true;
    }
    if (slot_ == Slot::EntryField) {
      if (!entry_.has_dtype) return fail("missing \"dtype\"" + where());
      if (!entry_.has_shape) return fail("missing \"shape\"" + where());
      if (entry_.offsets_seen < 0) return fail("missing \"data_offsets\"" + where());
      out_.tensors.push_back(std::move(entry_.info));
      slot_ = Slot::RootMember;
      in_member_value_ = false;
      return true;
    }
    if (slot_ == Slot::RootMember) {
      root_closed_ = true;
      return true;
    }
    return fail("unbalanced object");
  }

  bool start_array(std::size_t) override {
    if (slot_ == Slot::EntryField && field_ == "shape") {
      entry_.has_shape = true;
      slot_ = Slot::ShapeItem;
      return true;
    }
    if (slot_ == Slot::EntryField && field_ == "data_offsets") {
      entry_.offsets_seen = 0;
      slot_ = Slot::OffsetItem;
      return true;
    }
    return unexpected("an array");
  }

  bool end_array() override {
    if (slot_ == Slot::ShapeItem) {
      slot_ = Slot::EntryField;
      return true;
    }
    if (slot_ == Slot::OffsetItem) {
      if (entry_.offsets_seen != 2) {
        return fail("data_offsets must have exactly 2 items, has " +
                    std::to_string(entry_.offsets_seen) + where());
      }
      slot_ = Slot::EntryField;
      return true;
    }
    return fail("unbalanced array");
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // nlohmann's message already holds the position within the header; report the file offset.
    std::string what = ex.what();
    if (auto p = what.find("parse error"); p != std::string::npos) what = what.substr(p);
    error_ = "invalid JSON at byte " + std::to_string(8 + (position ? position - 1 : 0)) + ": " + what;
    return false;
  }

  const std::string& error() const { return error_; }
  bool unsupported() const { return unsupported_; }
  bool complete() const { return root_open_ && root_closed_; }

 private:
  bool number(uint64_t v) {
    if (slot_ == Slot::ShapeItem) {
      if (v > static_cast<uint64_t>(INT64_MAX)) {
        return fail("dimension " + std::to_string(v) + " exceeds int64" + where());
      }
      if (static_cast<int>(entry_.info.shape.size()) >= limits_.max_rank) {
        return fail("rank above " + std::to_string(limits_.max_rank) + where());
      }
      entry_.info.shape.push_back(static_cast<int64_t>(v));
      return true;
    }
    if (slot_ == Slot::OffsetItem) {
      if (entry_.offsets_seen >= 2) return fail("data_offsets has more than 2 items" + where());
      (entry_.offsets_seen == 0 ? entry_.info.begin : entry_.info.end) = v;
      ++entry_.offsets_seen;
      return true;
    }
    return unexpected("a number");
  }

  std::string where() const {
    switch (slot_) {
      case Slot::Root:
      case Slot::RootMember: return "";
      case Slot::MetadataValue: return " in \"__metadata__\"";
      default: return " in tensor \"" + entry_.info.name + "\"";
    }
  }

  bool unexpected(const std::string& what) {
    std::string expected;
    switch (slot_) {
      case Slot::Root: expected = "the header to be a JSON object"; break;
      case Slot::RootMember:
        expected = member_ == kMetadataKey ? "\"__metadata__\" to be an object of strings"
                                           : "tensor \"" + member_ + "\" to be an object";
        break;
      case Slot::MetadataValue: expected = "metadata value \"" + member_ + "\" to be a string"; break;
      case Slot::EntryField:
        expected = "\"" + field_ + "\" to be " +
                   (field_ == "dtype" ? "a string" : "an array of integers");
        break;
      case Slot::ShapeItem: expected = "shape items to be non-negative integers"; break;
      case Slot::OffsetItem: expected = "data_offsets items to be non-negative integers"; break;
    }
    return fail("expected " + expected + ", found " + what + where());
  }

  bool fail(std::string msg) {
    if (error_.empty()) error_ = std::move(msg);
    return false;
  }

  std::string_view source_;
  const SafetensorsLimits& limits_;
  SafetensorsHeader& out_;
  Slot slot_ = Slot::Root;
  bool in_member_value_ = false;
  bool root_open_ = false;
  bool root_closed_ = false;
  bool unsupported_ = false;
  std::string member_;
  std::string field_;
  bool seen_metadata_ = false;
  unsigned fields_seen_ = 0;
  uint64_t tensor_count_ = 0;
  PendingEntry entry_;
  std::string error_;
};

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

  // nlohmann's lexer stops at a NUL and skips a UTF-8 byte-order mark; serde_json (the reference)
  // rejects both, and so must we, or NUL-padded headers would parse here and nowhere else.
  if (const auto nul = header_json.find('\0'); nul != std::string_view::npos) {
    corrupt(source, "header: NUL byte at file byte " + std::to_string(8 + nul) +
                        " (headers are padded with spaces, never NUL)");
  }
  if (header_json.starts_with("\xEF\xBB\xBF")) {
    corrupt(source, "header: starts with a UTF-8 byte-order mark at file byte 8");
  }

  HeaderSax sax(source, limits, h);
  // The SAX parser is iterative and bounded by the grammar above (depth <= 3), so neither deep
  // nesting nor a huge header can exhaust the stack; strict=true rejects trailing garbage while
  // accepting JSON whitespace padding (space, tab, CR, LF), like the reference.
  bool ok = false;
  try {
    ok = json::sax_parse(header_json.begin(), header_json.end(), &sax, json::input_format_t::json,
                         /*strict=*/true);
  } catch (const json::exception& e) {
    corrupt(source, std::string("invalid header: ") + e.what());
  }
  if (!ok || !sax.complete()) {
    const std::string msg = sax.error().empty() ? "invalid header" : sax.error();
    if (sax.unsupported()) {
      throw Error(ErrorCode::Unsupported, "'" + std::string(source) + "': " + msg);
    }
    corrupt(source, "header: " + msg);
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
    std::vector<std::string_view> names;
    names.reserve(h.tensors.size());
    for (const TensorInfo& t : h.tensors) names.emplace_back(t.name);
    std::sort(names.begin(), names.end());
    if (auto dup = std::adjacent_find(names.begin(), names.end()); dup != names.end()) {
      corrupt(source, "header: duplicate tensor name \"" + std::string(*dup) + "\"");
    }
  }
  // Data order; zero-size tensors sort before a tensor that starts at the same offset, which is
  // where the reference writer puts them.
  std::stable_sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
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
