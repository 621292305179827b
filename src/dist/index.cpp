// The global index: JSON text, parsing, and the validation every index read from disk goes through.
#include <algorithm>
#include <limits>
#include <numeric>
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

GlobalIndex parse_index(std::string_view text, std::string_view source) {
  GlobalIndex index;
  try {
    const json doc = json::parse(text);
    if (!doc.is_object()) corrupt(source, "not a JSON object");
    if (doc.value("format", std::string()) != kIndexFormat) {
      corrupt(source, "\"format\" is not \"" + std::string(kIndexFormat) + "\"");
    }
    const json& version = doc.at("version");
    if (!version.is_number_integer() || version.get<int64_t>() != kIndexVersion) {
      throw Error(ErrorCode::Unsupported, "distributed index '" + std::string(source) +
                                              "' has version " + version.dump() +
                                              "; this ckptio reads version 1");
    }
    const json& world = doc.at("world_size");
    if (!world.is_number_integer() || world.get<int64_t>() < 1 || world.get<int64_t>() > kMaxWorld) {
      corrupt(source, "bad world_size " + world.dump());
    }
    index.world_size = static_cast<int>(world.get<int64_t>());
    const auto get_u64 = [&](const json& v, const char* what) {
      if (!v.is_number_unsigned()) corrupt(source, std::string(what) + " is not a non-negative integer");
      return v.get<uint64_t>();
    };
    const auto get_ints = [&](const json& v, const char* what) {
      if (!v.is_array() || v.size() > kMaxRank) corrupt(source, std::string(what) + " is not a short list of integers");
      std::vector<int64_t> out;
      out.reserve(v.size());
      for (const json& x : v) {
        if (!x.is_number_integer()) corrupt(source, std::string(what) + " holds a non-integer");
        if (x.is_number_unsigned() && x.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
          corrupt(source, std::string(what) + " holds an absurd value");
        }
        out.push_back(x.get<int64_t>());
      }
      return out;
    };
    const json& files = doc.at("files");
    if (!files.is_array()) corrupt(source, "\"files\" is not a list");
    for (const json& f : files) {
      if (!f.is_object() || !f.contains("name") || !f.at("name").is_string()) {
        corrupt(source, "a file entry has no name");
      }
      IndexFile out;
      out.name = f.at("name").get<std::string>();
      const uint64_t rank = get_u64(f.at("rank"), "a file's rank");
      if (rank >= static_cast<uint64_t>(index.world_size)) {
        corrupt(source, "file '" + printable(out.name) + "' has rank " + std::to_string(rank) +
                            " outside the world of " + std::to_string(index.world_size));
      }
      out.rank = static_cast<int>(rank);
      out.size = get_u64(f.at("size"), "a file's size");
      index.files.push_back(std::move(out));
    }
    const json& tensors = doc.at("tensors");
    if (!tensors.is_object()) corrupt(source, "\"tensors\" is not an object");
    index.tensors.reserve(tensors.size());
    for (const auto& [name, t] : tensors.items()) {
      if (!t.is_object()) corrupt(source, "tensor '" + printable(name) + "' is not an object");
      IndexTensor out;
      out.name = name;
      const json& dt = t.at("dtype");
      const auto dtype = dt.is_string() ? parse_dtype(dt.get<std::string>()) : std::nullopt;
      if (!dtype) corrupt(source, "tensor '" + printable(name) + "' has an unknown dtype " + dt.dump());
      out.dtype = *dtype;
      out.shape = get_ints(t.at("shape"), "a shape");
      const json& chunks = t.at("chunks");
      if (!chunks.is_array()) corrupt(source, "tensor '" + printable(name) + "': chunks is not a list");
      out.chunks.reserve(chunks.size());
      for (const json& c : chunks) {
        if (!c.is_object()) corrupt(source, "tensor '" + printable(name) + "': a chunk is not an object");
        IndexChunk ch;
        const uint64_t file = get_u64(c.at("file"), "a chunk's file");
        if (file >= index.files.size()) {
          corrupt(source, "tensor '" + printable(name) + "': a chunk names file #" +
                              std::to_string(file) + ", past the file list");
        }
        ch.file = static_cast<uint32_t>(file);
        ch.box.offsets = get_ints(c.at("offsets"), "a chunk's offsets");
        ch.box.shape = get_ints(c.at("shape"), "a chunk's shape");
        const json& range = c.at("data_offsets");
        if (!range.is_array() || range.size() != 2) corrupt(source, "data_offsets is not a pair");
        ch.begin = get_u64(range[0], "data_offsets");
        ch.end = get_u64(range[1], "data_offsets");
        out.chunks.push_back(std::move(ch));
      }
      index.tensors.push_back(std::move(out));
    }
  } catch (const json::exception& e) {
    corrupt(source, std::string("bad JSON: ") + e.what());
  }
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
