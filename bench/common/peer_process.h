// Peers (torch.save/torch.load through /usr/bin/python3, libtorch) run as child processes, one
// per timed operation, so that every measurement starts in a fresh process like a ckptio load
// into fresh memory: no peer is flattered by a heap that an earlier run left faulted in. The
// child times the operation itself (interpreter start-up and `import torch` are not counted)
// and prints one JSON line {"seconds": s, "version": v, ...} last.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace ckptio::bench {

struct PeerRun {
  std::optional<nlohmann::json> result;  // the child's JSON line
  std::string error;                     // why there is none (exit status and output head)
};

// Runs `command` through /bin/sh, stdout and stderr captured, and parses the last JSON object.
PeerRun run_peer_process(const std::string& command);

// Single-quotes `s` for /bin/sh.
std::string shell_quote(const std::string& s);

}  // namespace ckptio::bench
