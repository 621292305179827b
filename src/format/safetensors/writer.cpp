// The safetensors writer: the reference byte layout, streamed from the callers' buffers.
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <unordered_set>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "core/executor.h"

namespace ckptio {
namespace {

// JSON string literal with the escaping serde_json uses (", \\, control characters; UTF-8 kept).
std::string json_string(const std::string& s, std::string_view what) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorCode::InvalidArgument, std::string(what) + " is not valid UTF-8");
  }
}

void append_int_array(std::string& out, std::span<const int64_t> values) {
  out += '[';
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(values[i]);
  }
  out += ']';
}

}  // namespace

SafetensorsLayout plan_safetensors(std::span<const NamedTensor> tensors,
                                   const SafetensorsWriteOptions& options) {
  SafetensorsLayout layout;
  std::unordered_set<std::string_view> names;
  names.reserve(tensors.size());
  for (const NamedTensor& t : tensors) {
    if (t.name == "__metadata__") {
      throw Error(ErrorCode::InvalidArgument, "\"__metadata__\" is reserved and cannot name a tensor");
    }
    if (!names.insert(t.name).second) {
      throw Error(ErrorCode::InvalidArgument, "duplicate tensor name \"" + t.name + "\"");
    }
    uint64_t want = 0;
    try {
      want = tensor_nbytes(t.view.dtype, t.view.shape);
    } catch (const Error& e) {
      // Nothing on disk is corrupt here: the caller passed an impossible shape.
      throw Error(ErrorCode::InvalidArgument, "tensor \"" + t.name + "\": " + e.message());
    }
    if (want != t.view.bytes.size()) {
      throw Error(ErrorCode::InvalidArgument,
                  "tensor \"" + t.name + "\": " + std::string(dtype_name(t.view.dtype)) + " " +
                      shape_to_string(t.view.shape) + " needs " + std::to_string(want) +
                      " bytes, the buffer has " + std::to_string(t.view.bytes.size()));
    }
  }
  // The reference order: descending dtype (its alignment order), then name.
  layout.order.resize(tensors.size());
  std::iota(layout.order.begin(), layout.order.end(), size_t{0});
  std::sort(layout.order.begin(), layout.order.end(), [&](size_t a, size_t b) {
    const auto& ta = tensors[a];
    const auto& tb = tensors[b];
    if (ta.view.dtype != tb.view.dtype) return ta.view.dtype > tb.view.dtype;
    return ta.name < tb.name;
  });

  std::string json = "{";
  bool first = true;
  if (!options.omit_metadata) {
    const Metadata metadata = options.metadata.value_or(Metadata{{"format", "pt"}});
    json += "\"__metadata__\":{";
    bool first_key = true;
    for (const auto& [k, v] : metadata) {
      if (!first_key) json += ',';
      first_key = false;
      json += json_string(k, "metadata key");
      json += ':';
      json += json_string(v, "metadata value of \"" + k + "\"");
    }
    json += '}';
    first = false;
  }
  uint64_t offset = 0;
  layout.entries.reserve(tensors.size());
  for (size_t index : layout.order) {
    const NamedTensor& t = tensors[index];
    TensorInfo info{t.name, t.view.dtype, t.view.shape, offset, offset + t.view.bytes.size()};
    offset = info.end;
    if (!first) json += ',';
    first = false;
    json += json_string(t.name, "tensor name");
    json += ":{\"dtype\":\"";
    json += dtype_name(info.dtype);
    json += "\",\"shape\":";
    append_int_array(json, info.shape);
    json += ",\"data_offsets\":[";
    json += std::to_string(info.begin);
    json += ',';
    json += std::to_string(info.end);
    json += "]}";
    layout.entries.push_back(std::move(info));
  }
  json += '}';
  json.append((8 - json.size() % 8) % 8, ' ');
  if (json.size() > SafetensorsLimits{}.max_header_bytes) {
    throw Error(ErrorCode::InvalidArgument, "header would be " + std::to_string(json.size()) +
                                                " bytes, over the 100,000,000-byte limit");
  }
  layout.header.resize(8);
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) layout.header[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  layout.header += json;
  layout.file_size = layout.header.size() + offset;
  return layout;
}

void save_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                      const SafetensorsWriteOptions& options) {
  const SafetensorsLayout layout = plan_safetensors(tensors, options);
  io::Env& env = options.env ? *options.env : io::Env::posix();
  const uint64_t data_start = layout.header.size();
  // Tensor bytes go straight from the callers' buffers through the async writer (borrowed, no
  // copy); the commit below fsyncs the file once, so the writer itself does not.
  std::vector<std::string> labels;
  labels.reserve(layout.entries.size());
  for (const TensorInfo& e : layout.entries) labels.push_back("tensor \"" + e.name + "\"");
  auto fill = [&](io::WritableFile& file) {
    io::AsyncWriterOptions writer_options =
        options.writer != nullptr ? *options.writer : io::AsyncWriterOptions{};
    writer_options.env = &env;
    writer_options.sync = false;
    // Small files do not need a crowd of threads.
    const uint64_t chunks = layout.file_size / std::max<size_t>(writer_options.chunk_bytes, 1) + 1;
    writer_options.threads = detail::thread_count(writer_options.threads, chunks);
    io::AsyncWriter writer(writer_options);
    const auto id = writer.attach(file);
    writer.submit(id, 0, std::as_bytes(std::span(layout.header.data(), layout.header.size())),
                  "header");
    for (size_t i = 0; i < layout.order.size(); ++i) {
      const TensorInfo& e = layout.entries[i];
      writer.submit(id, data_start + e.begin, tensors[layout.order[i]].view.bytes, labels[i]);
    }
    writer.synchronize();
  };
  try {
    if (options.sync) {
      io::write_file_atomic(env, path, fill);
    } else {
      // Benchmarks and tests only: same temp + rename, no fsync.
      const auto temp = path.parent_path() / ("." + path.filename().string() + ".tmp-" + io::random_suffix());
      try {
        auto file = env.open_write(temp, io::OpenMode::CreateNew);
        fill(*file);
        file->close();
        env.rename(temp, path);
      } catch (...) {
        env.remove(temp);
        throw;
      }
    }
  } catch (const Error& e) {
    throw e.annotate("writing '" + path.string() + "'");
  }
}

std::string serialize_safetensors(std::span<const NamedTensor> tensors,
                                  const SafetensorsWriteOptions& options) {
  const SafetensorsLayout layout = plan_safetensors(tensors, options);
  std::string out = layout.header;
  out.resize(layout.file_size);
  for (size_t i = 0; i < layout.order.size(); ++i) {
    const auto& bytes = tensors[layout.order[i]].view.bytes;
    if (!bytes.empty()) {
      std::memcpy(out.data() + layout.header.size() + layout.entries[i].begin, bytes.data(), bytes.size());
    }
  }
  return out;
}

}  // namespace ckptio
