#include "dist/plan.h"

#include <algorithm>
#include <queue>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "ckptio/error.h"

namespace ckptio::dist::detail {

std::vector<int> assign_replicated(std::vector<std::pair<std::string, uint64_t>>& tensors,
                                   int world) {
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  using Load = std::pair<uint64_t, int>;  // (bytes, rank): the smallest on top
  std::priority_queue<Load, std::vector<Load>, std::greater<>> loads;
  for (int r = 0; r < world; ++r) loads.push({0, r});
  std::vector<int> owner;
  owner.reserve(tensors.size());
  for (const auto& t : tensors) {
    Load l = loads.top();
    loads.pop();
    owner.push_back(l.second);
    l.first += t.second;
    loads.push(l);
  }
  return owner;
}

std::string rank_file_name(int rank, size_t k, size_t n) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "shard-%05d-model-%05zu-of-%05zu.safetensors", rank + 1, k, n);
  return buf;
}

std::string report_to_json(const RankReport& r) {
  nlohmann::json doc;
  auto& files = doc["files"] = nlohmann::json::array();
  for (const auto& f : r.files) files.push_back({f.name, f.size, f.xxh3_128});
  auto& tensors = doc["tensors"] = nlohmann::json::array();
  for (const auto& t : r.tensors) tensors.push_back({t.name, dtype_name(t.dtype), t.shape});
  auto& chunks = doc["chunks"] = nlohmann::json::array();
  for (const auto& c : r.chunks) {
    chunks.push_back({c.tensor, c.file, c.box.offsets, c.box.shape, c.begin, c.end});
  }
  return doc.dump();
}

RankReport report_from_json(std::string_view text) {
  // Reports come from ranks of the same job running this code: a bad one is a bug.
  try {
    const nlohmann::json doc = nlohmann::json::parse(text);
    RankReport r;
    for (const auto& f : doc.at("files")) {
      r.files.push_back({f.at(0).get<std::string>(), f.at(1).get<uint64_t>(), f.at(2).get<std::string>()});
    }
    for (const auto& t : doc.at("tensors")) {
      const auto dtype = parse_dtype(t.at(1).get<std::string>());
      if (!dtype) throw Error(ErrorCode::Internal, "a rank reported an unknown dtype");
      r.tensors.push_back({t.at(0).get<std::string>(), *dtype, t.at(2).get<Shape>()});
    }
    for (const auto& c : doc.at("chunks")) {
      ReportChunk ch;
      ch.tensor = c.at(0).get<uint32_t>();
      ch.file = c.at(1).get<uint32_t>();
      ch.box.offsets = c.at(2).get<std::vector<int64_t>>();
      ch.box.shape = c.at(3).get<Shape>();
      ch.begin = c.at(4).get<uint64_t>();
      ch.end = c.at(5).get<uint64_t>();
      if (ch.tensor >= r.tensors.size() || ch.file >= r.files.size()) {
        throw Error(ErrorCode::Internal, "a rank's report names a tensor or file it does not list");
      }
      r.chunks.push_back(std::move(ch));
    }
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Internal, std::string("a rank's report is not valid: ") + e.what());
  }
}

GlobalIndex merge_reports(std::vector<RankReport> reports) {
  GlobalIndex index;
  index.world_size = static_cast<int>(reports.size());
  std::unordered_map<std::string, size_t> position;  // name -> index.tensors
  std::vector<int> first_rank;
  for (size_t rank = 0; rank < reports.size(); ++rank) {
    RankReport& r = reports[rank];
    const auto file_base = static_cast<uint32_t>(index.files.size());
    for (const auto& f : r.files) index.files.push_back({f.name, static_cast<int>(rank), f.size});
    std::vector<size_t> local(r.tensors.size());
    for (size_t i = 0; i < r.tensors.size(); ++i) {
      const ReportTensor& t = r.tensors[i];
      auto [it, added] = position.try_emplace(t.name, index.tensors.size());
      if (added) {
        index.tensors.push_back({t.name, t.dtype, t.shape, {}});
        first_rank.push_back(static_cast<int>(rank));
      } else {
        const IndexTensor& known = index.tensors[it->second];
        if (known.dtype != t.dtype || known.shape != t.shape) {
          throw Error(ErrorCode::InvalidArgument,
                      "tensor '" + printable(t.name) + "' is " + std::string(dtype_name(known.dtype)) +
                          " " + shape_to_string(known.shape) + " on rank " +
                          std::to_string(first_rank[it->second]) + " but " +
                          std::string(dtype_name(t.dtype)) + " " + shape_to_string(t.shape) +
                          " on rank " + std::to_string(rank));
        }
      }
      local[i] = it->second;
    }
    for (ReportChunk& c : r.chunks) {
      index.tensors[local[c.tensor]].chunks.push_back({file_base + c.file, std::move(c.box), c.begin, c.end});
    }
  }
  std::sort(index.tensors.begin(), index.tensors.end(),
            [](const IndexTensor& a, const IndexTensor& b) { return a.name < b.name; });
  try {
    validate_index(index, "being saved");
  } catch (const Error& e) {
    throw Error(ErrorCode::InvalidArgument,
                "the ranks' shards do not form a valid checkpoint: " + e.message());
  }
  return index;
}

}  // namespace ckptio::dist::detail
