// The plain-data document of a distributed training checkpoint ("ckptio.plain_data", the U8 tensor
// "__ckptio_plain_data__"): the non-tensor state flattened to dotted keys the way Python's
// ckptio.dist flattens a state dict, merged over the ranks (a leaf equal on every rank once, the
// others per rank), and rebuilt into JSON objects on load.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckptio/dist_checkpoint_io.h"

namespace ckptio::dist::detail {

using Leaves = std::map<std::string, nlohmann::json>;

// Adds the leaves of the JSON object `text` under `prefix` ("lr_scheduler.last_epoch"): objects
// are walked, every other value (arrays included) is one leaf; an empty nested object is a leaf
// too, and an empty top-level object leaves the marker leaf `prefix` = {} so that the component
// is known to be there. Error(InvalidArgument) naming `prefix` for text that is not a JSON object,
// or for a key that is empty or holds '.' (it would not split back into the same object).
void flatten_values(std::string_view prefix, std::string_view text, Leaves& out);

// The running states as Python's ckptio.dist.CheckpointIO writes them ("running_states.epoch",
// ..., "running_states.extra" holding [extra]).
void flatten_running(const RunningStates& running, std::string_view extra_json, Leaves& out);

// The merged document of every rank's leaves (JSON texts from all_gather, by rank): equal on
// every rank, since every rank computes it from the same inputs.
std::string merge_plain(const std::vector<std::string>& rank_leaves);

// A parsed document, and what one rank of `world` sees of it.
class PlainData {
 public:
  PlainData() = default;
  // Error(Corrupt) naming `source` for anything but a ckptio.plain_data document.
  PlainData(std::string_view text, std::string_view source);

  int saved_world_size() const { return world_; }
  // True when the document has `key` or keys below it ("key.*").
  bool has_prefix(std::string_view key) const;
  // The JSON object rebuilt from the keys below `prefix` (the marker leaf `prefix` = {} alone
  // gives {}), as rank `rank` of `world` sees it under `rule`.
  nlohmann::json rebuild(std::string_view prefix, int rank, int world, PerRankRule rule) const;
  // The value of `key` as rank `rank` sees it; nullptr JSON when absent (or omitted by `rule`).
  nlohmann::json value(std::string_view key, int rank, int world, PerRankRule rule) const;
  // Every per-rank key with each saved rank's value as JSON text.
  std::map<std::string, std::vector<std::string>> per_rank_texts() const;

 private:
  // false when `rule` omits the key.
  bool lookup(const std::string& key, int rank, int world, PerRankRule rule,
              nlohmann::json& out) const;
  int world_ = 0;
  nlohmann::json values_ = nlohmann::json::object();
  nlohmann::json per_rank_ = nlohmann::json::object();
};

}  // namespace ckptio::dist::detail
