// The global index: JSON text, parsing, and the validation every index read from disk goes through.
#include <algorithm>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "dist/box.h"

namespace ckptio::dist {

namespace {

using json = nlohmann::json;

constexpr int kMaxRank = 64;
constexpr int kMaxWorld = 1 << 24;

void append_ints(std::string& out, const std::vector<int64_t>& v) {
  out += '[';
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(v[i]);
  }
  out += ']';
}

[[noreturn]] void corrupt(std::string_view source, const std::string& what) {
  throw Error(ErrorCode::Corrupt, "distributed index '" + std::string(source) + "': " + what);
}

bool safe_file_name(const std::string& n) {
  if (n.empty() || n == "." || n == ".." || n.size() > 255) return false;
  for (unsigned char c : n) {
    if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f) return false;
  }
  return n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0;
}

std::string box_text(const Box& b) {
  std::string s = "offsets ";
  append_ints(s, b.offsets);
  s += " shape ";
  append_ints(s, b.shape);
  return s;
}

// Sort-based overlap check: sweep along one dimension, comparing each chunk only with the chunks
// still open along it. The dimension is the one where a coordinate is covered by the fewest chunks
// on average (the sum of the chunks' extents over the tensor's extent), which is the average size
// of the open set: 1 for row blocks swept along rows, the grid's other side for a grid, about 1
// along dim 0 for ZeRO ranges. So the sweep costs n log n for the layouts jobs use.
void check_overlaps(const IndexTensor& t, std::string_view source) {
  const auto& chunks = t.chunks;
  if (chunks.size() < 2) return;
  const size_t n = t.shape.size();
  if (n == 0) corrupt(source, "tensor '" + t.name + "' has " + std::to_string(chunks.size()) +
                                  " chunks for its one element");
  size_t best = 0;
  double best_density = 0;
  for (size_t d = 0; d < n; ++d) {
    double extent = 0;
    for (const IndexChunk& c : chunks) extent += static_cast<double>(c.box.shape[d]);
    const double density = extent / static_cast<double>(t.shape[d]);
    if (d == 0 || density < best_density) {
      best = d;
      best_density = density;
    }
  }
  // (start, chunk) pairs sort without chasing each chunk's heap-held offsets.
  std::vector<std::pair<int64_t, uint32_t>> order(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    order[i] = {chunks[i].box.offsets[best], static_cast<uint32_t>(i)};
  }
  std::sort(order.begin(), order.end());
  std::vector<std::pair<int64_t, uint32_t>> open;  // (end along `best`, chunk)
  Box scratch;
  for (const auto& [start, c] : order) {
    size_t keep = 0;
    for (const auto& o : open) {
      if (o.first <= start) continue;
      open[keep++] = o;
      if (detail::intersect(chunks[o.second].box, chunks[c].box, scratch)) {
        corrupt(source, "tensor '" + t.name + "': chunks overlap (" +
                            box_text(chunks[o.second].box) + " and " + box_text(chunks[c].box) +
                            ")");
      }
    }
    open.resize(keep);
    open.emplace_back(start + chunks[c].box.shape[best], c);
  }
}

}  // namespace

std::string index_to_json(const GlobalIndex& index) {
  std::string out;
  out += "{\n  \"format\": \"" + std::string(kIndexFormat) + "\",\n  \"version\": " +
         std::to_string(kIndexVersion) + ",\n  \"world_size\": " +
         std::to_string(index.world_size) + ",\n  \"files\": [";
  for (size_t i = 0; i < index.files.size(); ++i) {
    const IndexFile& f = index.files[i];
    out += i ? ",\n    " : "\n    ";
    out += "{\"name\": " + json(f.name).dump() + ", \"rank\": " + std::to_string(f.rank) +
           ", \"size\": " + std::to_string(f.size) + "}";
  }
  out += index.files.empty() ? "],\n  \"tensors\": {" : "\n  ],\n  \"tensors\": {";
  for (size_t i = 0; i < index.tensors.size(); ++i) {
    const IndexTensor& t = index.tensors[i];
    out += i ? ",\n    " : "\n    ";
    out += json(t.name).dump() + ": {\"dtype\": \"" + std::string(dtype_name(t.dtype)) +
           "\", \"shape\": ";
    append_ints(out, t.shape);
    out += ", \"chunks\": [";
    for (size_t c = 0; c < t.chunks.size(); ++c) {
      const IndexChunk& ch = t.chunks[c];
      out += c ? ",\n      " : "\n      ";
      out += "{\"file\": " + std::to_string(ch.file) + ", \"offsets\": ";
      append_ints(out, ch.box.offsets);
      out += ", \"shape\": ";
      append_ints(out, ch.box.shape);
      out += ", \"data_offsets\": [" + std::to_string(ch.begin) + "," + std::to_string(ch.end) +
             "]}";
    }
    out += t.chunks.empty() ? "]}" : "\n    ]}";
  }
  out += index.tensors.empty() ? "}\n}\n" : "\n  }\n}\n";
  return out;
}

void validate_index(const GlobalIndex& index, std::string_view source) {
  if (index.world_size < 1 || index.world_size > kMaxWorld) {
    corrupt(source, "world_size " + std::to_string(index.world_size) + " is out of range");
  }
  std::unordered_set<std::string> names;
  for (const IndexFile& f : index.files) {
    if (!safe_file_name(f.name)) {
      corrupt(source, "file name '" + printable(f.name) +
                          "' is not a plain *.safetensors name inside the folder");
    }
    if (!names.insert(f.name).second) corrupt(source, "file '" + f.name + "' is listed twice");
    if (f.rank < 0 || f.rank >= index.world_size) {
      corrupt(source, "file '" + f.name + "' has rank " + std::to_string(f.rank) +
                          " outside the world of " + std::to_string(index.world_size));
    }
    if (f.size > (uint64_t{1} << 62)) corrupt(source, "file '" + f.name + "' has an absurd size");
  }
  names.clear();
  for (const IndexTensor& t : index.tensors) {
    const std::string tn = "tensor '" + printable(t.name) + "'";
    if (t.name.empty()) corrupt(source, "a tensor has an empty name");
    if (!names.insert(t.name).second) corrupt(source, tn + " is listed twice");
    if (t.shape.size() > kMaxRank) corrupt(source, tn + " has more than 64 dimensions");
    for (int64_t d : t.shape) {
      if (d < 0) corrupt(source, tn + " has a negative dimension");
    }
    uint64_t numel = 0;
    try {
      numel = shape_numel(t.shape);
      (void)tensor_nbytes(t.dtype, t.shape);
    } catch (const Error& e) {
      corrupt(source, tn + ": " + e.message());
    }
    const bool sub_byte = dtype_bits(t.dtype) % 8 != 0;
    if (sub_byte && !(t.chunks.size() == 1 && detail::box_volume(t.chunks[0].box) == numel)) {
      throw Error(ErrorCode::Unsupported,
                  "distributed index '" + std::string(source) + "': " + tn + " of dtype " +
                      std::string(dtype_name(t.dtype)) +
                      " is split into chunks (sub-byte dtypes must be stored whole)");
    }
    const uint64_t elem_bits = static_cast<uint64_t>(dtype_bits(t.dtype));
    uint64_t covered = 0;
    for (const IndexChunk& c : t.chunks) {
      if (c.file >= index.files.size()) corrupt(source, tn + ": a chunk names file #" + std::to_string(c.file) + ", past the file list");
      if (c.box.offsets.size() != t.shape.size() || c.box.shape.size() != t.shape.size()) {
        corrupt(source, tn + ": a chunk has " + std::to_string(c.box.offsets.size()) +
                            " offsets and " + std::to_string(c.box.shape.size()) +
                            " extents for a tensor of " + std::to_string(t.shape.size()) +
                            " dimensions");
      }
      if (!detail::box_inside(c.box, t.shape)) {
        corrupt(source, tn + ": chunk " + box_text(c.box) + " lies outside the shape " +
                            shape_to_string(t.shape));
      }
      const uint64_t volume = detail::box_volume(c.box);
      if (volume == 0) corrupt(source, tn + ": chunk " + box_text(c.box) + " is empty");
      const IndexFile& f = index.files[c.file];
      // volume <= numel, whose byte count was checked above: no overflow.
      const uint64_t want = (volume * elem_bits + 7) / 8;
      if (c.begin > c.end || c.end > f.size || c.end - c.begin != want) {
        corrupt(source, tn + ": chunk " + box_text(c.box) + " has bytes [" +
                            std::to_string(c.begin) + ", " + std::to_string(c.end) + ") in '" +
                            f.name + "' (" + std::to_string(f.size) + " bytes); it needs " +
                            std::to_string(want) + " bytes inside the file");
      }
      covered += volume;
      if (covered > numel) break;  // overlaps: reported precisely below
    }
    check_overlaps(t, source);
    if (covered != numel) {
      corrupt(source, tn + ": its chunks cover " + std::to_string(covered) + " of " +
                          std::to_string(numel) + " elements");
    }
  }
}

namespace {

// A JSON reader for the index alone: it builds the GlobalIndex as it goes (no document tree, no
// allocation per value), so opening a checkpoint costs about one pass over the text. It accepts
// any JSON (whitespace, key order, escapes, unknown keys, which are skipped) and refuses what a
// JSON parser refuses (bad UTF-8, control characters, lone surrogates, trailing text); a key given
// twice in one object is refused too, since the index would be ambiguous.
class IndexReader {
 public:
  IndexReader(std::string_view text, std::string_view source) : s_(text), source_(source) {}

  GlobalIndex read() {
    GlobalIndex index;
    std::optional<std::string> format;
    std::optional<Num> version, world;
    bool format_seen = false, version_seen = false, world_seen = false;
    bool files_seen = false, tensors_seen = false, header_checked = false, files_read = false;
    // "files" and "tensors" are read where they stand once the format, version and world size
    // are known (the order ckptio writes); before that their place is kept and they are read
    // after the rest, so that a newer version is refused as such whatever its layout.
    std::optional<size_t> files_at, tensors_at;
    ws();
    if (peek() != '{') corrupt(source_, "not a JSON object");
    object([&](std::string_view key) {
      if (key == "format") {
        once(format_seen, key);
        format = peek() == '"' ? string() : (skip(0), std::string("\x01"));
      } else if (key == "version") {
        once(version_seen, key);
        version = number_or_not();
      } else if (key == "world_size") {
        once(world_seen, key);
        world = number_or_not();
      } else if (key == "files" || key == "tensors") {
        const bool files = key == "files";
        once(files ? files_seen : tensors_seen, key);
        if (!header_checked && format && version && world) {
          check_header(index, format, version, world);
          header_checked = true;
        }
        if (!header_checked || (!files && !files_read)) {  // chunks name files by position
          (files ? files_at : tensors_at) = pos_;
          skip(0);
        } else if (files) {
          read_files(index);
          files_read = true;
        } else {
          read_tensors(index);
        }
      } else {
        skip(0);
      }
    });
    ws();
    if (pos_ != s_.size()) fail("text after the index");
    if (!header_checked) check_header(index, format, version, world);
    if (!files_seen) fail("no \"files\"");
    if (!tensors_seen) fail("no \"tensors\"");
    if (files_at) {
      pos_ = *files_at;
      read_files(index);
    }
    if (tensors_at) {
      pos_ = *tensors_at;
      read_tensors(index);
    }
    return index;
  }

 private:
  struct Num {
    bool integer = true;  // no fraction, no exponent, fits 64 bits
    bool negative = false;
    uint64_t value = 0;   // magnitude
    size_t begin = 0, end = 0;  // where it is written, for messages
  };

  std::string_view s_;
  std::string_view source_;
  size_t pos_ = 0;

  std::string text_of(const Num& n) const {
    return std::string(s_.substr(n.begin, std::min<size_t>(n.end - n.begin, 40)));
  }

  void check_header(GlobalIndex& index, const std::optional<std::string>& format,
                    const std::optional<Num>& version, const std::optional<Num>& world) const {
    if (format != kIndexFormat) corrupt(source_, "\"format\" is not \"" + std::string(kIndexFormat) + "\"");
    if (!version) fail("no \"version\"");
    if (!version->integer || version->negative || version->value != uint64_t(kIndexVersion)) {
      throw Error(ErrorCode::Unsupported, "distributed index '" + std::string(source_) +
                                              "' has version " + text_of(*version) +
                                              "; this ckptio reads version 1");
    }
    if (!world) fail("no \"world_size\"");
    if (!world->integer || world->negative || world->value < 1 || world->value > uint64_t(kMaxWorld)) {
      corrupt(source_, "bad world_size " + text_of(*world));
    }
    index.world_size = static_cast<int>(world->value);
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  [[noreturn]] void fail(const std::string& what) const {
    corrupt(source_, "bad JSON at byte " + std::to_string(pos_) + ": " + what);
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  void expect(char c) {
    ws();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
    ws();
  }

  // '{' then on_key(key) for each member, with pos_ at its value (whitespace skipped); on_key
  // must consume the value. Callers refuse a known key given twice (the index would be
  // ambiguous); unknown keys are skipped, repeated or not.
  template <class F>
  void object(F&& on_key) {
    expect('{');
    if (peek() == '}') {
      ++pos_;
      return;
    }
    std::string scratch;  // only for keys with escapes
    for (;;) {
      if (peek() != '"') fail("expected a key");
      const std::string_view k = key(scratch);
      expect(':');
      on_key(k);
      ws();
      if (peek() == ',') {
        ++pos_;
        ws();
        continue;
      }
      if (peek() != '}') fail("expected ',' or '}'");
      ++pos_;
      return;
    }
  }

  // A key at pos_: a view of the text when it has no escapes (the common case), else decoded
  // into `scratch`.
  std::string_view key(std::string& scratch) {
    size_t run = pos_ + 1;
    while (run < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[run]);
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
      ++run;
    }
    if (run < s_.size() && s_[run] == '"') {
      const std::string_view k = s_.substr(pos_ + 1, run - pos_ - 1);
      pos_ = run + 1;
      return k;
    }
    scratch.clear();
    string_into(&scratch);
    return scratch;
  }

  // Refuses a known key seen before in the same object.
  void once(bool& seen, std::string_view key) {
    if (seen) fail("key \"" + printable(key) + "\" appears twice in one object");
    seen = true;
  }

  // '[' then on_element() for each element (pos_ at it, whitespace skipped).
  template <class F>
  void array(F&& on_element) {
    expect('[');
    if (peek() == ']') {
      ++pos_;
      return;
    }
    for (;;) {
      on_element();
      ws();
      if (peek() == ',') {
        ++pos_;
        ws();
        continue;
      }
      if (peek() != ']') fail("expected ',' or ']'");
      ++pos_;
      return;
    }
  }

  void append_utf8(std::string* out, uint32_t cp) {
    if (!out) return;
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) fail("a short \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      v <<= 4;
      if (is_digit(c)) v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
      else fail("a bad \\u escape");
    }
    return v;
  }

  // One UTF-8 sequence starting at pos_ (its lead byte >= 0x80), checked (no overlongs, no
  // surrogates, at most U+10FFFF) and copied.
  void utf8(std::string* out) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s_[pos_ + k]); };
    const unsigned char c = b(0);
    size_t n = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
    else fail("invalid UTF-8");
    if (pos_ + n > s_.size()) fail("invalid UTF-8");
    for (size_t k = 1; k < n; ++k) {
      if ((b(k) & 0xC0) != 0x80) fail("invalid UTF-8");
      cp = (cp << 6) | (b(k) & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      fail("invalid UTF-8");
    }
    if (out) out->append(s_.substr(pos_, n));
    pos_ += n;
  }

  // A string at pos_ ('"'), decoded into *out (nullptr: checked and skipped).
  void string_into(std::string* out) {
    ++pos_;  // '"'
    for (;;) {
      // The plain run up to the next quote, backslash, control or non-ASCII byte in one go.
      size_t run = pos_;
      while (run < s_.size()) {
        const auto c = static_cast<unsigned char>(s_[run]);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++run;
      }
      if (out) out->append(s_.substr(pos_, run - pos_));
      pos_ = run;
      if (pos_ >= s_.size()) fail("an unterminated string");
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return;
      }
      if (c < 0x20) fail("a control character in a string");
      if (c >= 0x80) {
        utf8(out);
        continue;
      }
      ++pos_;  // backslash
      if (pos_ >= s_.size()) fail("an unterminated string");
      const char e = s_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': if (out) *out += e; break;
        case 'b': if (out) *out += '\b'; break;
        case 'f': if (out) *out += '\f'; break;
        case 'n': if (out) *out += '\n'; break;
        case 'r': if (out) *out += '\r'; break;
        case 't': if (out) *out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("a lone surrogate");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') fail("a lone surrogate");
            pos_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("a lone surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("a bad escape");
      }
    }
  }

  std::string string() {
    if (peek() != '"') fail("expected a string");
    std::string out;
    string_into(&out);
    return out;
  }

  // A JSON number at pos_; integer = false for a fraction, an exponent or more than 64 bits.
  Num number() {
    Num n;
    const size_t begin = pos_;
    if (peek() == '-') {
      n.negative = true;
      ++pos_;
    }
    if (!is_digit(peek())) fail("a bad number");
    if (peek() == '0') {
      ++pos_;
    } else {
      while (is_digit(peek())) {
        const auto d = static_cast<uint64_t>(peek() - '0');
        if (n.value > (std::numeric_limits<uint64_t>::max() - d) / 10) n.integer = false;
        n.value = n.value * 10 + d;
        ++pos_;
      }
    }
    if (peek() == '.') {
      n.integer = false;
      ++pos_;
      if (!is_digit(peek())) fail("a bad number");
      while (is_digit(peek())) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      n.integer = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!is_digit(peek())) fail("a bad number");
      while (is_digit(peek())) ++pos_;
    }
    n.begin = begin;
    n.end = pos_;
    return n;
  }

  // A number, or any other value (skipped), which is never a valid integer.
  Num number_or_not() {
    if (peek() == '-' || is_digit(peek())) return number();
    Num n;
    n.integer = false;
    n.begin = pos_;
    skip(0);
    n.end = pos_;
    return n;
  }

  void literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) fail("an unknown literal");
    pos_ += word.size();
  }

  // Any value at pos_, checked and skipped; nesting is bounded so hostile text cannot exhaust
  // the stack.
  void skip(int depth) {
    if (depth > 256) fail("nesting too deep");
    ws();
    switch (peek()) {
      case '{': object([&](std::string_view) { skip(depth + 1); }); break;
      case '[': array([&] { skip(depth + 1); }); break;
      case '"': string_into(nullptr); break;
      case 't': literal("true"); break;
      case 'f': literal("false"); break;
      case 'n': literal("null"); break;
      default: (void)number();
    }
  }

  uint64_t u64(const char* what) {
    if (peek() != '-' && !is_digit(peek())) corrupt(source_, std::string(what) + " is not a non-negative integer");
    const Num n = number();
    if (!n.integer || n.negative) corrupt(source_, std::string(what) + " is not a non-negative integer");
    return n.value;
  }

  std::vector<int64_t> ints(const char* what) {
    if (peek() != '[') corrupt(source_, std::string(what) + " is not a short list of integers");
    std::vector<int64_t> out;
    array([&] {
      if (out.size() >= size_t(kMaxRank)) corrupt(source_, std::string(what) + " is not a short list of integers");
      if (peek() != '-' && !is_digit(peek())) corrupt(source_, std::string(what) + " holds a non-integer");
      const Num n = number();
      if (!n.integer) corrupt(source_, std::string(what) + " holds a non-integer");
      if (n.negative ? n.value > uint64_t(std::numeric_limits<int64_t>::max()) + 1
                     : n.value > uint64_t(std::numeric_limits<int64_t>::max())) {
        corrupt(source_, std::string(what) + " holds an absurd value");
      }
      out.push_back(n.negative ? static_cast<int64_t>(0 - n.value) : static_cast<int64_t>(n.value));
    });
    return out;
  }

  void read_files(GlobalIndex& index) {
    if (peek() != '[') corrupt(source_, "\"files\" is not a list");
    array([&] {
      if (peek() != '{') corrupt(source_, "a file entry has no name");
      IndexFile out;
      bool named = false, ranked = false, sized = false;
      uint64_t rank = 0;
      object([&](std::string_view key) {
        if (key == "name") {
          once(named, key);
          if (peek() != '"') corrupt(source_, "a file entry has no name");
          out.name = string();
        } else if (key == "rank") {
          once(ranked, key);
          rank = u64("a file's rank");
        } else if (key == "size") {
          once(sized, key);
          out.size = u64("a file's size");
        } else {
          skip(0);
        }
      });
      if (!named) corrupt(source_, "a file entry has no name");
      if (!ranked || !sized) corrupt(source_, "file '" + printable(out.name) + "' has no rank or size");
      if (rank >= static_cast<uint64_t>(index.world_size)) {
        corrupt(source_, "file '" + printable(out.name) + "' has rank " + std::to_string(rank) +
                             " outside the world of " + std::to_string(index.world_size));
      }
      out.rank = static_cast<int>(rank);
      index.files.push_back(std::move(out));
    });
  }

  void read_chunk(const GlobalIndex& index, const std::string& name, IndexTensor& t) {
    if (peek() != '{') corrupt(source_, "tensor '" + printable(name) + "': a chunk is not an object");
    IndexChunk ch;
    bool file = false, offsets = false, shape = false, range = false;
    object([&](std::string_view key) {
      if (key == "file") {
        once(file, key);
        const uint64_t f = u64("a chunk's file");
        if (f >= index.files.size()) {
          corrupt(source_, "tensor '" + printable(name) + "': a chunk names file #" +
                               std::to_string(f) + ", past the file list");
        }
        ch.file = static_cast<uint32_t>(f);
      } else if (key == "offsets") {
        once(offsets, key);
        ch.box.offsets = ints("a chunk's offsets");
      } else if (key == "shape") {
        once(shape, key);
        ch.box.shape = ints("a chunk's shape");
      } else if (key == "data_offsets") {
        once(range, key);
        if (peek() != '[') corrupt(source_, "data_offsets is not a pair");
        size_t n = 0;
        array([&] {
          if (n >= 2) corrupt(source_, "data_offsets is not a pair");
          (n++ == 0 ? ch.begin : ch.end) = u64("data_offsets");
        });
        if (n != 2) corrupt(source_, "data_offsets is not a pair");
      } else {
        skip(0);
      }
    });
    if (!file || !offsets || !shape || !range) {
      corrupt(source_, "tensor '" + printable(name) + "': a chunk lacks file, offsets, shape or data_offsets");
    }
    t.chunks.push_back(std::move(ch));
  }

  void read_tensors(GlobalIndex& index) {
    if (peek() != '{') corrupt(source_, "\"tensors\" is not an object");
    object([&](std::string_view key) {
      IndexTensor out;
      out.name = std::string(key);
      if (peek() != '{') corrupt(source_, "tensor '" + printable(out.name) + "' is not an object");
      bool typed = false, shaped = false, chunked = false;
      object([&](std::string_view field) {
        if (field == "dtype") {
          once(typed, field);
          std::string scratch;
          const std::string_view text = peek() == '"' ? this->key(scratch) : (skip(0), std::string_view());
          const auto dtype = parse_dtype(text);
          if (!dtype) corrupt(source_, "tensor '" + printable(out.name) + "' has an unknown dtype \"" + printable(text) + "\"");
          out.dtype = *dtype;
        } else if (field == "shape") {
          once(shaped, field);
          out.shape = ints("a shape");
        } else if (field == "chunks") {
          once(chunked, field);
          if (peek() != '[') corrupt(source_, "tensor '" + printable(out.name) + "': chunks is not a list");
          array([&] { read_chunk(index, out.name, out); });
        } else {
          skip(0);
        }
      });
      if (!typed || !shaped || !chunked) {
        corrupt(source_, "tensor '" + printable(out.name) + "' lacks dtype, shape or chunks");
      }
      index.tensors.push_back(std::move(out));
    });
  }
};

}  // namespace

GlobalIndex parse_index(std::string_view text, std::string_view source) {
  GlobalIndex index = IndexReader(text, source).read();
  std::sort(index.tensors.begin(), index.tensors.end(),
            [](const IndexTensor& a, const IndexTensor& b) { return a.name < b.name; });
  validate_index(index, source);
  return index;
}

bool is_distributed_checkpoint(const std::filesystem::path& dir, io::Env& env) {
  const io::FileInfo info = env.stat(dir / kIndexName);
  return info.exists && !info.is_directory;
}

}  // namespace ckptio::dist
