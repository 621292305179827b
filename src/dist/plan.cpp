#include "dist/plan.h"

#include <algorithm>
#include <cstdint>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>

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

// Reports cross between the ranks of one job, all running this code, and only rank 0 reads them,
// after every rank has written its files: a compact binary form, because parsing four 150 KB JSON
// reports took rank 0 about 10 ms while every other rank waited for the commit. Integers are
// LEB128 varints (the numbers are mostly small: indices, dimensions); a string or an integer list
// is its length then its items.
namespace {

constexpr std::string_view kReportMagic = "ckptio.report.1";

class ReportWriter {
 public:
  void u64(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void str(std::string_view s) {
    u64(s.size());
    out_.append(s);
  }
  void ints(const std::vector<int64_t>& v) {
    u64(v.size());
    for (int64_t x : v) u64(static_cast<uint64_t>(x));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class ReportReader {
 public:
  explicit ReportReader(std::string_view in) : in_(in) {}
  uint64_t u64() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      need(1);
      const auto b = static_cast<unsigned char>(in_[at_++]);
      if (shift == 63 && b > 1) bad("an integer runs over 64 bits");
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    bad("an integer runs over 64 bits");
  }
  // A count of items that take at least `min_bytes` each: never more than the bytes left hold.
  size_t count(size_t min_bytes) {
    const uint64_t n = u64();
    if (n > (in_.size() - at_) / min_bytes) bad("a count runs past the end");
    return static_cast<size_t>(n);
  }
  std::string str() {
    const size_t n = count(1);
    std::string s(in_.substr(at_, n));
    at_ += n;
    return s;
  }
  std::vector<int64_t> ints() {
    std::vector<int64_t> v(count(1));
    for (int64_t& x : v) x = static_cast<int64_t>(u64());
    return v;
  }
  void finish() const {
    if (at_ != in_.size()) bad("bytes follow its end");
  }
  [[noreturn]] static void bad(const std::string& why) {
    throw Error(ErrorCode::Internal, "a rank's report is not valid: " + why);
  }

 private:
  void need(size_t n) const {
    if (in_.size() - at_ < n) bad("it ends early");
  }
  std::string_view in_;
  size_t at_ = 0;
};

}  // namespace

std::string report_to_bytes(const RankReport& r) {
  ReportWriter w;
  w.str(kReportMagic);
  w.u64(r.files.size());
  for (const auto& f : r.files) {
    w.str(f.name);
    w.u64(f.size);
    w.str(f.xxh3_128);
  }
  w.u64(r.tensors.size());
  for (const auto& t : r.tensors) {
    w.str(t.name);
    w.str(dtype_name(t.dtype));
    w.ints(t.shape);
  }
  w.u64(r.chunks.size());
  for (const auto& c : r.chunks) {
    w.u64(c.tensor);
    w.u64(c.file);
    w.ints(c.box.offsets);
    w.ints(c.box.shape);
    w.u64(c.begin);
    w.u64(c.end);
  }
  return w.take();
}

RankReport report_from_bytes(std::string_view bytes) {
  // Reports come from ranks of the same job running this code: a bad one is a bug, but it still
  // must not read past the buffer or allocate more than it holds.
  ReportReader in(bytes);
  if (in.str() != kReportMagic) ReportReader::bad("it does not start with the report's mark");
  RankReport r;
  r.files.resize(in.count(3));
  for (auto& f : r.files) {
    f.name = in.str();
    f.size = in.u64();
    f.xxh3_128 = in.str();
  }
  r.tensors.resize(in.count(3));
  for (auto& t : r.tensors) {
    t.name = in.str();
    const auto dtype = parse_dtype(in.str());
    if (!dtype) ReportReader::bad("it names an unknown dtype");
    t.dtype = *dtype;
    t.shape = in.ints();
  }
  r.chunks.resize(in.count(6));
  for (auto& c : r.chunks) {
    const uint64_t tensor = in.u64(), file = in.u64();
    if (tensor >= r.tensors.size() || file >= r.files.size()) {
      ReportReader::bad("a chunk names a tensor or file it does not list");
    }
    c.tensor = static_cast<uint32_t>(tensor);
    c.file = static_cast<uint32_t>(file);
    c.box.offsets = in.ints();
    c.box.shape = in.ints();
    c.begin = in.u64();
    c.end = in.u64();
  }
  in.finish();
  return r;
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
