// The safetensors writer: the reference byte layout, streamed from the callers' buffers.
#include <algorithm>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>
#include <numeric>
#include <unordered_set>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "core/executor.h"
#include "format/safetensors/file_writer.h"

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

namespace detail {

void write_safetensors_files(std::span<const SafetensorsFileJob> jobs,
                             const SafetensorsFileWriteOptions& options) {
  io::AsyncWriterOptions writer_options =
      options.tuning != nullptr ? *options.tuning : io::AsyncWriterOptions{};
  writer_options.env = options.env != nullptr ? options.env : &io::Env::posix();
  writer_options.sync = options.sync;
  if (!writer_options.early_writeback) {
    writer_options.early_writeback = options.sync || options.synced_by_caller;
  }
  // Small files do not need a crowd of threads; 0 is default_threads() (not 1) up to that cap.
  uint64_t total = 0;
  for (const SafetensorsFileJob& job : jobs) total += job.layout->file_size;
  uint64_t tasks = total / std::max<size_t>(writer_options.chunk_bytes, 1) + jobs.size();
  // By default, buffered writes get one thread per file at most: the kernel serializes buffered
  // writes to one file (ext4 holds the inode lock for each), so a second thread only adds
  // contention (1 GiB, one file, this bench's raw write: 0.65 s by 1 thread, 3.2 s by 2). O_DIRECT
  // writes to one file do run in parallel; an explicit thread count is always taken as given.
  if (writer_options.threads == 0 && !writer_options.direct_io) {
    tasks = std::min<uint64_t>(tasks, jobs.size());
  }
  writer_options.threads = detail::thread_count(writer_options.threads, static_cast<size_t>(tasks));
  // Names of the bytes in error messages, borrowed by the writer until synchronize(): declared
  // before it, so that when a submit throws, the writer's destructor (which waits for the chunks
  // still queued) runs while they exist.
  std::deque<std::string> labels;
  io::AsyncWriter writer(writer_options);

  // Tensors under this size are gathered (header included) into one buffer that is handed over as
  // a copy, so a thousand 4 KiB tensors cost a handful of writes; larger ones are borrowed.
  constexpr size_t kGatherBelow = size_t{1} << 20;
  constexpr size_t kGatherBytes = size_t{4} << 20;
  std::vector<std::byte> gather;
  gather.reserve(kGatherBytes);
  for (const SafetensorsFileJob& job : jobs) {
    const SafetensorsLayout& layout = *job.layout;
    const auto id = writer.attach(*job.file);
    uint64_t gather_start = 0;
    std::string gather_first, gather_last;
    auto flush = [&] {
      if (gather.empty()) return;
      labels.push_back(gather_first == gather_last ? gather_first
                                                   : gather_first + " to " + gather_last);
      writer.submit_copy(id, gather_start, gather, labels.back());
      gather.clear();
    };
    auto add = [&](uint64_t offset, std::span<const std::byte> bytes, std::string what) {
      if (bytes.size() >= kGatherBelow) {
        flush();
        labels.push_back(std::move(what));
        writer.submit(id, offset, bytes, labels.back());
        return;
      }
      if (!gather.empty() && gather.size() + bytes.size() > kGatherBytes) flush();
      if (gather.empty()) {
        gather_start = offset;
        gather_first = what;
      }
      gather_last = std::move(what);
      gather.insert(gather.end(), bytes.begin(), bytes.end());
    };
    add(0, std::as_bytes(std::span(layout.header.data(), layout.header.size())), "header");
    const uint64_t data_start = layout.header.size();
    for (size_t i = 0; i < layout.order.size(); ++i) {
      // The data section is the tensors back to back in data order, so gathering is contiguous.
      const TensorInfo& e = layout.entries[i];
      add(data_start + e.begin, job.tensors[layout.order[i]].view.bytes, "tensor \"" + e.name + "\"");
    }
    flush();
  }
  writer.synchronize();
}

}  // namespace detail

void save_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                      const SafetensorsWriteOptions& options) {
  const SafetensorsLayout layout = plan_safetensors(tensors, options);
  io::Env& env = options.env ? *options.env : io::Env::posix();
  try {
    io::write_file_atomic(
        env, path,
        [&](io::WritableFile& file) {
          // write_file_atomic fsyncs the file once it is filled.
          const detail::SafetensorsFileJob job{&file, &layout, tensors};
          detail::write_safetensors_files(std::span(&job, 1),
                                          {.env = &env,
                                           .sync = false,
                                           .tuning = options.writer,
                                           .synced_by_caller = options.sync});
        },
        {.sync = options.sync});
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
