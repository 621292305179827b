// load_checkpoint: match source tensors to targets (or not), check everything, then read in
// parallel straight into the destinations.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "ckptio/error.h"
#include "ckptio/load.h"
#include "load/checked_convert.h"
#include "load/read_all.h"
#include "core/executor.h"
#include "load/rename.h"

namespace ckptio {
namespace {

std::string describe(DType dtype, const Shape& shape) {
  return std::string(dtype_name(dtype)) + " " + shape_to_string(shape);
}

std::string join_limited(const std::vector<std::string>& names, size_t limit = 50) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > limit) s += ", ... (" + std::to_string(names.size() - limit) + " more)";
  return s;
}

// Source names after rename_keys, with collisions refused.
std::vector<std::string> renamed_names(const CheckpointReader& reader, const LoadOptions& options) {
  std::vector<std::string> out;
  std::unordered_map<std::string, std::string> seen;
  for (const auto& t : reader.tensors()) {
    std::string r = detail::rename_key(t.name, options.rename_keys);
    auto [it, fresh] = seen.emplace(r, t.name);
    if (!fresh) {
      throw Error(ErrorCode::InvalidArgument, "rename_keys maps both '" + it->second + "' and '" +
                                                  t.name + "' to '" + r + "'");
    }
    out.push_back(std::move(r));
  }
  return out;
}

struct NarrowingRead {
  std::string source_name;
  std::string name;  // after rename_keys, for errors
  DType from;
  DType to;
  std::span<std::byte> dst;
};

// One tensor at a time per thread, through a scratch buffer of its stored size, so the overflow
// check sees the source values; memory is bounded by threads x the largest such tensor.
uint64_t read_narrowing(const CheckpointReader& reader, const std::vector<NarrowingRead>& reads,
                        const LoadOptions& options) {
  std::atomic<uint64_t> bytes{0};
  detail::parallel_for(reads.size(), detail::thread_count(options.threads, reads.size()),
                       [&](size_t i) {
    const NarrowingRead& r = reads[i];
    const size_t count = r.dst.size() / (static_cast<size_t>(dtype_bits(r.to)) / 8);
    const size_t stored = count * (static_cast<size_t>(dtype_bits(r.from)) / 8);
    auto scratch = std::make_unique_for_overwrite<std::byte[]>(stored);
    const ReadRequest request{r.source_name, r.from, {scratch.get(), stored}};
    bytes += reader.read_into_many({&request, 1}, 1);
    detail::convert_checked(r.from, scratch.get(), r.to, r.dst.data(), count, r.name,
                            options.allow_overflow);
  });
  return bytes.load();
}

}  // namespace

namespace detail {
std::string rename_key(const std::string& name,
                       const std::vector<std::pair<std::string, std::string>>& rename_keys) {
  for (const auto& [from, to] : rename_keys) {
    if (name.compare(0, from.size(), from) == 0) return to + name.substr(from.size());
  }
  return name;
}
}  // namespace detail

std::string LoadReport::summary() const {
  char size[64];
  std::snprintf(size, sizeof size, "%.1f MB", static_cast<double>(bytes_read) / 1e6);
  char secs[64];
  std::snprintf(secs, sizeof secs, "%.3f s", std::chrono::duration<double>(elapsed).count());
  std::string s = "loaded " + std::to_string(loaded.size()) + " tensors (" + size + ") from " +
                  std::string(source_kind_name(source.kind)) + " '" + source.path.string() +
                  "' in " + secs;
  if (!converted.empty()) s += "; " + std::to_string(converted.size()) + " converted";
  if (!missing.empty()) s += "; " + std::to_string(missing.size()) + " missing: " + join_limited(missing, 10);
  if (!unexpected.empty()) {
    s += "; " + std::to_string(unexpected.size()) + " unexpected: " + join_limited(unexpected, 10);
  }
  if (!mismatched.empty()) {
    s += "; " + std::to_string(mismatched.size()) + " mismatched: " + join_limited(mismatched, 10);
  }
  return s;
}

LoadReport load_checkpoint(const std::filesystem::path& source, std::span<const LoadTarget> targets,
                           const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  std::unordered_map<std::string, size_t> by_name;
  for (size_t i = 0; i < targets.size(); ++i) {
    const LoadTarget& t = targets[i];
    if (!by_name.emplace(t.name, i).second) {
      throw Error(ErrorCode::InvalidArgument, "target '" + t.name + "' is listed twice");
    }
    const uint64_t want = tensor_nbytes(t.dtype, t.shape);
    if (t.buffer.size() != want) {
      throw Error(ErrorCode::InvalidArgument, "target '" + t.name + "' (" + describe(t.dtype, t.shape) +
                                                  ") needs a " + std::to_string(want) +
                                                  "-byte buffer, got " + std::to_string(t.buffer.size()));
    }
  }

  // Buffers are filled with pread: no mapping to fault in and copy out of.
  const CheckpointReader reader = CheckpointReader::open(source, options.source, ReadMode::Pread);
  LoadReport report;
  report.source = reader.source();
  const std::vector<std::string> names = renamed_names(reader, options);
  std::vector<ReadRequest> requests;     // same dtype or widening: converted by the reader
  std::vector<NarrowingRead> rounded;    // narrowing: read as stored, then converted and checked
  std::vector<bool> matched(targets.size(), false);
  for (size_t i = 0; i < names.size(); ++i) {
    const SourceTensorInfo& src = reader.tensors()[i];
    auto it = by_name.find(names[i]);
    if (it == by_name.end()) {
      report.unexpected.push_back(names[i]);
      continue;
    }
    const LoadTarget& dst = targets[it->second];
    matched[it->second] = true;
    const bool convertible = options.convert_dtype && can_convert(src.dtype, dst.dtype);
    const bool narrowing = convertible && !detail::is_widening(src.dtype, dst.dtype);
    if (src.shape != dst.shape || (src.dtype != dst.dtype && !convertible) ||
        (narrowing && !options.allow_narrowing)) {
      report.mismatched.push_back(names[i] + ": source " + describe(src.dtype, src.shape) +
                                  " vs target " + describe(dst.dtype, dst.shape) +
                                  (src.shape == dst.shape && narrowing
                                       ? " (would round; allow_narrowing converts)"
                                       : ""));
      continue;
    }
    if (src.dtype != dst.dtype) report.converted.push_back(names[i]);
    if (narrowing) {
      rounded.push_back({src.name, names[i], src.dtype, dst.dtype, dst.buffer});
    } else {
      requests.push_back({src.name, dst.dtype, dst.buffer});
    }
    report.loaded.push_back(names[i]);
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!matched[i]) report.missing.push_back(targets[i].name);
  }
  if (options.strict && !report.ok()) {
    std::string msg = "strict load from '" + report.source.path.string() + "' failed:";
    if (!report.missing.empty()) {
      msg += " " + std::to_string(report.missing.size()) + " missing (" + join_limited(report.missing) + ");";
    }
    if (!report.unexpected.empty()) {
      msg += " " + std::to_string(report.unexpected.size()) + " unexpected (" +
             join_limited(report.unexpected) + ");";
    }
    if (!report.mismatched.empty()) {
      msg += " " + std::to_string(report.mismatched.size()) + " mismatched (" +
             join_limited(report.mismatched) + ");";
    }
    msg.pop_back();
    throw Error(ErrorCode::Mismatch, msg);
  }
  report.bytes_read = reader.read_into_many(requests, options.threads);
  report.bytes_read += read_narrowing(reader, rounded, options);
  report.elapsed = std::chrono::steady_clock::now() - start;
  return report;
}

LoadedCheckpoint load_checkpoint(const std::filesystem::path& source, const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const CheckpointReader reader = CheckpointReader::open(source, options.source, ReadMode::Mmap);
  LoadedCheckpoint out;
  out.report.source = reader.source();
  const std::vector<std::string> names = renamed_names(reader, options);
  const auto& infos = reader.tensors();
  detail::ReadAllResult all =
      detail::read_all_tensors(reader, options.dtype, options.threads, options.allow_overflow);
  std::vector<Tensor>& tensors = all.tensors;
  const std::vector<bool>& convert = all.converted;
  for (size_t i = 0; i < infos.size(); ++i) {
    out.report.bytes_read += infos[i].nbytes;
    out.report.loaded.push_back(names[i]);
    if (convert[i]) out.report.converted.push_back(names[i]);
    out.tensors.emplace(names[i], std::move(tensors[i]));
  }
  out.report.elapsed = std::chrono::steady_clock::now() - start;
  return out;
}

}  // namespace ckptio
