// The global index: JSON text, parsing, and the validation every index read from disk goes through.
#include <algorithm>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <simdjson.h>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "dist/box.h"
#include "dist/index_parse.h"

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

constexpr size_t kMaxDepth = 256;

// Builds the GlobalIndex from nlohmann's SAX events in one pass, without a document tree. nlohmann
// checks the JSON (UTF-8, escapes, numbers, trailing text); this handler checks the index's shape
// with a stack of what each open object or list holds, skips unknown keys, bounds the nesting
// (hostile text must not grow the stack without end) and refuses a known key given twice in one
// object, since the index would be ambiguous. The format, version and world size may come after
// "files" and "tensors": until they are known, the first error is kept and the rest of that member
// skipped, so that a newer version is refused as such whatever its layout.
class IndexSax final : public nlohmann::json_sax<json> {
 public:
  explicit IndexSax(std::string_view source) : source_(source) {}

  GlobalIndex finish() {
    if (!header_checked_) check_header();
    if (!files_seen_) corrupt(source_, "no \"files\"");
    if (!tensors_seen_) corrupt(source_, "no \"tensors\"");
    return std::move(index_);
  }

  bool null() override { return wrong("null"); }
  bool boolean(bool v) override { return wrong(v ? "true" : "false"); }
  bool binary(binary_t&) override { return wrong("binary data"); }  // never in JSON text

  bool number_unsigned(number_unsigned_t v) override {
    switch (slot()) {
      case Slot::Skip: break;
      case Slot::Version: header_value(version_, Num{true, v, std::to_string(v)}); break;
      case Slot::World: header_value(world_, Num{true, v, std::to_string(v)}); break;
      case Slot::FileRank: rank_ = v; break;
      case Slot::FileSize: file_.size = v; break;
      case Slot::ChunkFile:
        if (v > std::numeric_limits<uint32_t>::max()) {
          return tensor_fail("a chunk names file #" + std::to_string(v) + ", past the file list");
        }
        chunk_.file = static_cast<uint32_t>(v);
        break;
      case Slot::Int:
        if (v > uint64_t(std::numeric_limits<int64_t>::max())) return tensor_fail(std::string(what_) + " holds an absurd value");
        return push_int(static_cast<int64_t>(v));
      case Slot::RangeInt:
        if (range_n_ >= 2) return tensor_fail("data_offsets is not a pair");
        (range_n_++ == 0 ? chunk_.begin : chunk_.end) = v;
        break;
      default: return wrong(std::to_string(v));
    }
    return true;
  }

  bool number_integer(number_integer_t v) override {  // nlohmann's event for a negative number
    switch (slot()) {
      case Slot::Int: return push_int(v);
      default: return not_unsigned(std::to_string(v));
    }
  }

  bool number_float(number_float_t, const string_t& text) override { return not_unsigned(text); }

  bool string(string_t& s) override {
    switch (slot()) {
      case Slot::Skip: return true;
      case Slot::Format: header_value(format_, std::move(s)); return true;
      case Slot::FileName: file_.name = std::move(s); return true;
      case Slot::Dtype: {
        const auto dtype = parse_dtype(s);
        if (!dtype) return tensor_fail("unknown dtype \"" + printable(s) + "\"");
        tensor_.dtype = *dtype;
        return true;
      }
      default: return wrong("\"" + printable(s.substr(0, 40)) + "\"");
    }
  }

  bool start_object(std::size_t) override {
    const Slot s = slot();
    if (stack_.size() >= kMaxDepth) corrupt(source_, "bad JSON: nesting deeper than " + std::to_string(kMaxDepth));
    switch (s) {
      case Slot::Document: return push(Ctx::Top);
      case Slot::Tensors: return push(Ctx::Tensors);
      case Slot::File:
        file_ = IndexFile{};
        rank_ = 0;
        return push(Ctx::File);
      case Slot::Tensor: return push(Ctx::Tensor);  // named by its key
      case Slot::Chunk:
        chunk_ = IndexChunk{};
        return push(Ctx::Chunk);
      default: wrong("an object"); return push(Ctx::Skip);
    }
  }

  bool start_array(std::size_t) override {
    const Slot s = slot();
    if (stack_.size() >= kMaxDepth) corrupt(source_, "bad JSON: nesting deeper than " + std::to_string(kMaxDepth));
    switch (s) {
      case Slot::Files: return push(Ctx::Files);
      case Slot::Chunks: return push(Ctx::Chunks);
      case Slot::Ints:
        ints_->clear();
        return push(Ctx::Ints);
      case Slot::Range:
        range_n_ = 0;
        return push(Ctx::Range);
      default: wrong("a list"); return push(Ctx::Skip);
    }
  }

  bool key(string_t& k) override {
    Frame& f = stack_.back();
    switch (f.ctx) {
      case Ctx::Top: {
        static constexpr Known kTop[] = {{"format", Slot::Format}, {"version", Slot::Version},
                                         {"world_size", Slot::World}, {"files", Slot::Files},
                                         {"tensors", Slot::Tensors}};
        field_ = known(f, k, kTop);
        if (field_ == Slot::Files) files_seen_ = true;
        if (field_ == Slot::Tensors) tensors_seen_ = true;
        break;
      }
      case Ctx::File: {
        static constexpr Known kFile[] = {{"name", Slot::FileName}, {"rank", Slot::FileRank}, {"size", Slot::FileSize}};
        field_ = known(f, k, kFile);
        break;
      }
      case Ctx::Tensors:
        tensor_ = IndexTensor{};
        tensor_.name = k;
        field_ = Slot::Tensor;
        break;
      case Ctx::Tensor: {
        static constexpr Known kTensor[] = {{"dtype", Slot::Dtype}, {"shape", Slot::Ints}, {"chunks", Slot::Chunks}};
        field_ = known(f, k, kTensor);
        if (field_ == Slot::Ints) ints(tensor_.shape, "a shape");
        break;
      }
      case Ctx::Chunk: {
        static constexpr Known kChunk[] = {{"file", Slot::ChunkFile}, {"offsets", Slot::Ints},
                                           {"shape", Slot::Ints}, {"data_offsets", Slot::Range}};
        field_ = known(f, k, kChunk);
        if (field_ == Slot::Ints) {
          k == "offsets" ? ints(chunk_.box.offsets, "a chunk's offsets") : ints(chunk_.box.shape, "a chunk's shape");
        }
        break;
      }
      default: field_ = Slot::Skip;
    }
    return true;
  }

  bool end_object() override {
    const Frame f = stack_.back();
    stack_.pop_back();
    switch (f.ctx) {
      case Ctx::File:
        if (!(f.seen & 1)) return fail("a file entry has no name");
        if ((f.seen & 6) != 6) return fail("file '" + printable(file_.name) + "' has no rank or size");
        // The world size may not be known yet: validate_index checks the rank against it.
        if (rank_ >= uint64_t(kMaxWorld)) {
          return fail("file '" + printable(file_.name) + "' has rank " + std::to_string(rank_) +
                      " outside any world");
        }
        file_.rank = static_cast<int>(rank_);
        index_.files.push_back(std::move(file_));
        break;
      case Ctx::Tensor:
        if (f.seen != 7) return fail("tensor '" + printable(tensor_.name) + "' lacks dtype, shape or chunks");
        index_.tensors.push_back(std::move(tensor_));
        break;
      case Ctx::Chunk:
        if (f.seen != 15) return tensor_fail("a chunk lacks file, offsets, shape or data_offsets");
        tensor_.chunks.push_back(std::move(chunk_));
        break;
      default: break;
    }
    return true;
  }

  bool end_array() override {
    const Ctx c = stack_.back().ctx;
    stack_.pop_back();
    if (c == Ctx::Range && range_n_ != 2) return tensor_fail("data_offsets is not a pair");
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    // what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ...".
    std::string_view what = e.what();
    if (const size_t end = what.find("] "); what.starts_with("[json.") && end != what.npos) what.remove_prefix(end + 2);
    corrupt(source_, "bad JSON at byte " + std::to_string(position) + ": " + std::string(what));
  }

 private:
  // What the next value is, given the open container and the key before it.
  enum class Slot : uint8_t {
    Skip, Document, Format, Version, World, Files, Tensors, File, FileName, FileRank, FileSize,
    Tensor, Dtype, Ints, Int, Chunks, Chunk, ChunkFile, Range, RangeInt,
  };
  enum class Ctx : uint8_t { Skip, Top, Files, File, Tensors, Tensor, Chunks, Chunk, Ints, Range };
  struct Frame {
    Ctx ctx;
    uint8_t seen = 0;  // known keys met so far, one bit each
  };
  struct Known {
    std::string_view key;
    Slot slot;
  };
  struct Num {
    bool integer = false;  // a non-negative integer of at most 64 bits
    uint64_t value = 0;
    std::string text;  // as written, for messages
  };

  std::string_view source_;
  GlobalIndex index_;
  std::vector<Frame> stack_;
  Slot field_ = Slot::Skip;  // in an object: what the current key's value is
  std::optional<std::string> format_;
  std::optional<Num> version_, world_;
  bool header_checked_ = false, files_seen_ = false, tensors_seen_ = false;
  std::optional<std::string> deferred_;  // the first error met before the header was checked
  IndexFile file_;
  uint64_t rank_ = 0;
  IndexTensor tensor_;
  IndexChunk chunk_;
  std::vector<int64_t>* ints_ = nullptr;  // the list being read, and its name for messages
  const char* what_ = "";
  size_t range_n_ = 0;

  Slot slot() const {
    if (stack_.empty()) return Slot::Document;
    switch (stack_.back().ctx) {
      case Ctx::Skip: return Slot::Skip;
      case Ctx::Files: return Slot::File;
      case Ctx::Chunks: return Slot::Chunk;
      case Ctx::Ints: return Slot::Int;
      case Ctx::Range: return Slot::RangeInt;
      default: return field_;
    }
  }

  bool push(Ctx c) {
    stack_.push_back(Frame{c});
    return true;
  }

  template <size_t N>
  Slot known(Frame& f, std::string_view k, const Known (&keys)[N]) {
    for (size_t i = 0; i < N; ++i) {
      if (keys[i].key != k) continue;
      if (f.seen & (1u << i)) {
        const std::string what = "key \"" + printable(k) + "\" appears twice in one object";
        f.ctx == Ctx::Tensor || f.ctx == Ctx::Chunk ? tensor_fail(what) : fail(what);
        return Slot::Skip;
      }
      f.seen |= static_cast<uint8_t>(1u << i);
      return keys[i].slot;
    }
    return Slot::Skip;
  }

  void ints(std::vector<int64_t>& into, const char* what) {
    ints_ = &into;
    what_ = what;
  }

  bool push_int(int64_t v) {
    if (ints_->size() >= size_t(kMaxRank)) return tensor_fail(std::string(what_) + " is not a short list of integers");
    ints_->push_back(v);
    return true;
  }

  // An error in the index's content: thrown once the header is known to be this version's, else
  // kept (the first one) and the rest of the top-level member skipped.
  bool fail(const std::string& what) {
    if (header_checked_) corrupt(source_, what);
    if (!deferred_) deferred_ = what;
    for (size_t i = 1; i < stack_.size(); ++i) stack_[i].ctx = Ctx::Skip;
    field_ = Slot::Skip;
    return true;
  }

  bool tensor_fail(const std::string& what) { return fail("tensor '" + printable(tensor_.name) + "': " + what); }

  template <class T>
  void header_value(std::optional<T>& slot, T value) {
    slot = std::move(value);
    if (!header_checked_ && format_ && version_ && world_) check_header();
  }

  void check_header() {
    if (format_ != kIndexFormat) corrupt(source_, "\"format\" is not \"" + std::string(kIndexFormat) + "\"");
    if (!version_) corrupt(source_, "no \"version\"");
    if (!version_->integer || version_->value != uint64_t(kIndexVersion)) {
      throw Error(ErrorCode::Unsupported, "distributed index '" + std::string(source_) + "' has version " +
                                              version_->text + "; this ckptio reads version 1");
    }
    if (!world_) corrupt(source_, "no \"world_size\"");
    if (!world_->integer || world_->value < 1 || world_->value > uint64_t(kMaxWorld)) {
      corrupt(source_, "bad world_size " + world_->text);
    }
    index_.world_size = static_cast<int>(world_->value);
    header_checked_ = true;
    if (deferred_) corrupt(source_, *deferred_);
  }

  // A value that is not a non-negative integer (`text` says what it is) where one may be wanted.
  bool not_unsigned(const std::string& text) {
    switch (slot()) {
      case Slot::FileRank: return fail("a file's rank is not a non-negative integer");
      case Slot::FileSize: return fail("a file's size is not a non-negative integer");
      case Slot::ChunkFile: return tensor_fail("a chunk's file is not a non-negative integer");
      case Slot::RangeInt: return tensor_fail("data_offsets holds " + text + ", not a non-negative integer");
      case Slot::Int: return tensor_fail(std::string(what_) + " holds a non-integer " + text);
      default: return wrong(text);
    }
  }

  // A value of the wrong kind for its slot; `text` says what it is.
  bool wrong(const std::string& text) {
    switch (slot()) {
      case Slot::Skip: return true;
      case Slot::Document: corrupt(source_, "not a JSON object");
      case Slot::Format: header_value(format_, std::string()); return true;  // never the format
      case Slot::Version: header_value(version_, Num{false, 0, text}); return true;
      case Slot::World: header_value(world_, Num{false, 0, text}); return true;
      case Slot::Files: return fail("\"files\" is not a list");
      case Slot::Tensors: return fail("\"tensors\" is not an object");
      case Slot::File:
      case Slot::FileName: return fail("a file entry has no name");
      case Slot::Tensor: return fail("tensor '" + printable(tensor_.name) + "' is not an object");
      case Slot::Dtype: return tensor_fail("unknown dtype " + text);
      case Slot::Ints: return tensor_fail(std::string(what_) + " is not a short list of integers");
      case Slot::Chunks: return tensor_fail("chunks is not a list");
      case Slot::Chunk: return tensor_fail("a chunk is not an object");
      case Slot::Range: return tensor_fail("data_offsets is not a pair");
      default: return not_unsigned(text);
    }
  }
};

// Calls the handler for `e` and everything in it in document order, as nlohmann::sax_parse would
// for the same text. False where the handler stopped, or where only the reference parser can
// answer: a floating-point number (the handler's messages quote its text, which the tree does
// not keep).
bool replay(simdjson::dom::element e, IndexSax& sax) {
  using T = simdjson::dom::element_type;
  constexpr auto kUnknown = static_cast<std::size_t>(-1);
  switch (e.type()) {
    case T::OBJECT: {
      simdjson::dom::object object;
      if (e.get(object) || !sax.start_object(kUnknown)) return false;
      for (simdjson::dom::key_value_pair member : object) {
        std::string key(member.key);
        if (!sax.key(key) || !replay(member.value, sax)) return false;
      }
      return sax.end_object();
    }
    case T::ARRAY: {
      simdjson::dom::array array;
      if (e.get(array) || !sax.start_array(kUnknown)) return false;
      for (simdjson::dom::element v : array) {
        if (!replay(v, sax)) return false;
      }
      return sax.end_array();
    }
    case T::STRING: {
      std::string_view view;
      if (e.get(view)) return false;
      std::string text(view);
      return sax.string(text);
    }
    case T::INT64: {
      int64_t v = 0;
      if (e.get(v)) return false;
      return v >= 0 ? sax.number_unsigned(static_cast<uint64_t>(v)) : sax.number_integer(v);
    }
    case T::UINT64: {
      uint64_t v = 0;
      return !e.get(v) && sax.number_unsigned(v);
    }
    case T::BOOL: {
      bool v = false;
      return !e.get(v) && sax.boolean(v);
    }
    case T::NULL_VALUE: return sax.null();
    case T::DOUBLE: return false;
  }
  return false;
}

// Whether the text may hold the number -0 (a '-' then '0' and no more of a number, after ':', ','
// or '['; inside a string this may be a false alarm). simdjson reads -0 as the integer 0, where
// nlohmann reports a negative integer, which the handler refuses in most places.
bool may_hold_negative_zero(std::string_view text) {
  for (size_t at = text.find("-0"); at != text.npos; at = text.find("-0", at + 1)) {
    const char next = at + 2 < text.size() ? text[at + 2] : ' ';
    if ((next >= '0' && next <= '9') || next == '.' || next == 'e' || next == 'E') continue;
    size_t before = at;
    while (before > 0 && (text[before - 1] == ' ' || text[before - 1] == '\t' ||
                          text[before - 1] == '\n' || text[before - 1] == '\r')) {
      --before;
    }
    if (before > 0 && (text[before - 1] == ':' || text[before - 1] == ',' || text[before - 1] == '[')) {
      return true;
    }
  }
  return false;
}

// The index read by simdjson (an order of magnitude faster than nlohmann's lexer, which took most
// of a load's index open) through the same handler; nullopt for anything it does not accept
// whole (bad JSON, a rejected index, a float), which the reference parser then reads again, so
// that what is accepted and every error text stay the reference's.
std::optional<GlobalIndex> parse_with_simdjson(std::string_view text, std::string_view source) {
  // simdjson builds a tree several times the text's size; the nlohmann reader streams. Indexes of
  // thousands of ranks (a 1,024-rank, 1,000-tensor one is 127 MB) go the streaming way.
  constexpr size_t kMaxTreeText = size_t{32} << 20;
  if (text.size() > kMaxTreeText || may_hold_negative_zero(text)) return std::nullopt;
  simdjson::dom::parser parser;
  // Deeper than the handler allows, so that the handler's own depth error is the one reported.
  if (parser.allocate(std::max<size_t>(text.size(), 64), kMaxDepth + 2)) return std::nullopt;
  const simdjson::padded_string padded(text);
  simdjson::dom::element root;
  if (parser.parse(padded).get(root)) return std::nullopt;
  try {
    IndexSax sax(source);
    if (!replay(root, sax)) return std::nullopt;
    return sax.finish();
  } catch (const Error&) {
    return std::nullopt;
  }
}

GlobalIndex finish_index(GlobalIndex index, std::string_view source) {
  std::sort(index.tensors.begin(), index.tensors.end(),
            [](const IndexTensor& a, const IndexTensor& b) { return a.name < b.name; });
  validate_index(index, source);
  return index;
}

}  // namespace

namespace detail {

GlobalIndex parse_index_with_nlohmann(std::string_view text, std::string_view source) {
  IndexSax sax(source);
  // `sax` throws on every error, nlohmann's own (parse_error) included.
  if (!json::sax_parse(text.data(), text.data() + text.size(), &sax)) corrupt(source, "bad JSON");
  return finish_index(sax.finish(), source);
}

}  // namespace detail

GlobalIndex parse_index(std::string_view text, std::string_view source) {
  if (std::optional<GlobalIndex> index = parse_with_simdjson(text, source)) {
    return finish_index(std::move(*index), source);
  }
  return detail::parse_index_with_nlohmann(text, source);
}

bool is_distributed_checkpoint(const std::filesystem::path& dir, io::Env& env) {
  const io::FileInfo info = env.stat(dir / kIndexName);
  return info.exists && !info.is_directory;
}

}  // namespace ckptio::dist
