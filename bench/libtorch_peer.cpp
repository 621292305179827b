// ckptio-bench-libtorch-peer SPEC.json: times libtorch's torch::save / torch::load of the state
// ckptio-bench describes (names, dtypes, element counts) and prints one JSON line of medians.
// A separate program so that ckptio-bench itself builds without libtorch.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/version.h>

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void fsync_path(const std::string& p, int flags) {
  const int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) throw std::runtime_error("fsync " + p);
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: ckptio-bench-libtorch-peer SPEC.json\n");
    return 2;
  }
  try {
    std::ifstream in(argv[1]);
    const auto spec = nlohmann::json::parse(in);
    const std::string path = spec.at("path");
    const int repeat = spec.at("repeat");
    // torch::save of a std::vector<Tensor> is libtorch's whole-state save (no names: an
    // OrderedDict needs a module; the bytes written are the same).
    std::vector<torch::Tensor> state;
    for (const auto& t : spec.at("tensors")) {
      const auto dtype = t.at(1).get<std::string>() == "F32" ? torch::kFloat32 : torch::kBFloat16;
      state.push_back(torch::rand({t.at(2).get<int64_t>()}, torch::TensorOptions().dtype(dtype)));
    }
    using Clock = std::chrono::steady_clock;
    std::vector<double> saves, loads;
    for (int i = 0; i < repeat; ++i) {
      std::filesystem::remove(path);
      const auto t0 = Clock::now();
      torch::save(state, path);
      fsync_path(path, O_RDONLY);
      fsync_path(std::filesystem::path(path).parent_path().string(), O_RDONLY | O_DIRECTORY);
      saves.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    for (int i = 0; i < repeat; ++i) {
      std::vector<torch::Tensor> loaded;
      const auto t0 = Clock::now();
      torch::load(loaded, path);
      loads.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::filesystem::remove(path);
    std::printf("%s\n", nlohmann::json{{"save", median(saves)},
                                       {"load", median(loads)},
                                       {"version", TORCH_VERSION}}
                            .dump()
                            .c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-libtorch-peer: %s\n", e.what());
    return 1;
  }
}
