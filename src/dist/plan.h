// The pure planning steps of a distributed save: what each rank writes where, what it reports to
// the coordinator, and how the coordinator merges the reports into the global index. No I/O, so
// the bench builds the plan for a thousand simulated ranks.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/dist.h"

namespace ckptio::dist::detail {

// Throws Error(InvalidArgument) naming the tensor for a malformed item (`what`: "save item").
void check_item(const ShardedTensor& t, size_t nbytes, std::string_view what);

// A box of an item's local buffer: its elements are the buffer's bytes [byte_offset, +nbytes).
struct Region {
  Box box;
  uint64_t byte_offset = 0;
  uint64_t nbytes = 0;
};
// The non-empty boxes an item's buffer holds (flat ranges: the few boxes of the range without
// padding), in buffer order.
std::vector<Region> regions_of(const ShardedTensor& t);

// The rank that writes each replicated tensor: largest first (ties by name), each to the rank
// with the fewest bytes so far (ties to the lowest rank). Every rank computes the same answer from
// the same list. `tensors`: (name, bytes) of the distinct replicated tensors.
std::vector<int> assign_replicated(std::vector<std::pair<std::string, uint64_t>>& tensors, int world);

// One chunk a rank wrote, as it reports it.
struct ReportChunk {
  uint32_t tensor = 0;  // index into RankReport::tensors
  uint32_t file = 0;    // index into RankReport::files
  Box box;
  uint64_t begin = 0, end = 0;
};
struct ReportFile {
  std::string name;
  uint64_t size = 0;
  std::string xxh3_128;
};
struct ReportTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
};
struct RankReport {
  std::vector<ReportFile> files;
  std::vector<ReportTensor> tensors;  // every tensor the rank listed, written or not
  std::vector<ReportChunk> chunks;
};

// A rank's report as bytes for the gather to rank 0, and back. A malformed one (a bug: ranks run
// the same code) is Error(Internal), never a read past its end.
std::string report_to_bytes(const RankReport& report);
RankReport report_from_bytes(std::string_view bytes);

// "shard-00001-model-00002-of-00003.safetensors": PyTorch's HuggingFaceStorageWriter names, with
// the 1-based shard index rank + 1 as PyTorch numbers them.
std::string rank_file_name(int rank, size_t k, size_t n);

// The coordinator's merge: the global index of all ranks' reports, validated. Ranks that disagree
// on a tensor's dtype or shape, and pieces that do not cover every tensor exactly once, are
// Error(InvalidArgument) naming the tensor (and ranks).
GlobalIndex merge_reports(std::vector<RankReport> reports);

}  // namespace ckptio::dist::detail
