// ckptio-bench's peers: torch.save/torch.load through /usr/bin/python3 and libtorch's
// torch::save/torch::load (ckptio-bench-libtorch-peer, when built), each save and each load in a
// fresh process (common/peer_process.h), the same state as ckptio's.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ckptio_bench/state.h"

namespace ckptio::bench {

struct PeerTimes {
  std::optional<double> save, load;  // medians
  std::string version;
  std::string error;  // why a figure is missing
};

// torch.save (+fsync of the file and the folder) and torch.load, `repeat` fresh processes each.
PeerTimes time_python_torch(const std::vector<StateTensor>& state, const std::filesystem::path& work,
                            int repeat);
// The same through `program` (ckptio-bench-libtorch-peer).
PeerTimes time_libtorch(const std::filesystem::path& program, const std::vector<StateTensor>& state,
                        const std::filesystem::path& work, int repeat);

}  // namespace ckptio::bench
