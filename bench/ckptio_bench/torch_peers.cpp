#include "ckptio_bench/torch_peers.h"

#include <nlohmann/json.hpp>

#include "ckptio/io.h"
#include "common/peer_process.h"
#include "common/timing.h"

namespace ckptio::bench {
namespace {

// torch_peer.py SPEC save|load: one timed operation, one JSON line.
constexpr const char* kTorchPeer = R"PY(
import json, os, sys, time
import torch
spec = json.load(open(sys.argv[1]))
path, op = spec["path"], sys.argv[2]
if op == "save":
    torch.manual_seed(0)
    state = {}
    for name, dtype, numel in spec["tensors"]:
        t = torch.empty(numel, dtype=torch.float32 if dtype == "F32" else torch.bfloat16)
        t.uniform_()
        state[name] = t
    if os.path.exists(path): os.remove(path)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    os.fsync(dfd); os.close(dfd)
    seconds = time.perf_counter() - t0
else:
    t0 = time.perf_counter()
    loaded = torch.load(path)
    seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "version": torch.__version__}))
)PY";

std::filesystem::path write_spec(const std::vector<StateTensor>& state,
                                 const std::filesystem::path& work, const std::string& tag) {
  nlohmann::json spec;
  spec["path"] = (work / (tag + ".pt")).string();
  spec["tensors"] = nlohmann::json::array();
  for (const auto& t : state) {
    spec["tensors"].push_back({t.name, std::string(dtype_name(t.dtype)), t.shape[0]});
  }
  const auto path = work / (tag + "-spec.json");
  io::write_file_atomic(io::Env::posix(), path, spec.dump());
  return path;
}

PeerTimes time_peer(const std::string& command, int repeat) {
  PeerTimes t;
  for (const char* op : {"save", "load"}) {
    std::vector<double> seconds;
    for (int i = 0; i < repeat; ++i) {
      const PeerRun run = run_peer_process(command + " " + op);
      if (!run.result) {
        t.error = std::string(op) + " failed: " + run.error;
        return t;
      }
      seconds.push_back(run.result->at("seconds").get<double>());
      t.version = run.result->value("version", std::string());
    }
    (std::string(op) == "save" ? t.save : t.load) = median(seconds);
  }
  return t;
}

}  // namespace

PeerTimes time_python_torch(const std::vector<StateTensor>& state, const std::filesystem::path& work,
                            int repeat) {
  const auto script = work / "torch_peer.py";
  io::write_file_atomic(io::Env::posix(), script, kTorchPeer);
  const auto spec = write_spec(state, work, "python-peer");
  return time_peer("/usr/bin/python3 " + shell_quote(script.string()) + " " + shell_quote(spec.string()),
                   repeat);
}

PeerTimes time_libtorch(const std::filesystem::path& program, const std::vector<StateTensor>& state,
                        const std::filesystem::path& work, int repeat) {
  const auto spec = write_spec(state, work, "libtorch-peer");
  return time_peer(shell_quote(program.string()) + " " + shell_quote(spec.string()), repeat);
}

}  // namespace ckptio::bench
