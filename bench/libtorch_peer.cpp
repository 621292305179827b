// ckptio-bench-libtorch-peer SPEC.json save|load: times one libtorch torch::save (+fsync of the
// file and the folder) or torch::load of the state ckptio-bench describes (names, dtypes,
// element counts) and prints one JSON line {"seconds", "version"}. ckptio-bench runs it once per
// timed operation, so every figure comes from a fresh process. A separate program so that
// ckptio-bench itself builds without libtorch.
#include <fcntl.h>
#include <unistd.h>

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

void fsync_path(const std::string& p, int flags) {
  const int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) throw std::runtime_error("fsync " + p);
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::string(argv[2]) != "save" && std::string(argv[2]) != "load")) {
    std::fprintf(stderr, "usage: ckptio-bench-libtorch-peer SPEC.json save|load\n");
    return 2;
  }
  try {
    std::ifstream in(argv[1]);
    const auto spec = nlohmann::json::parse(in);
    const std::string path = spec.at("path");
    using Clock = std::chrono::steady_clock;
    double seconds = 0;
    if (std::string(argv[2]) == "save") {
      // torch::save of a std::vector<Tensor> is libtorch's whole-state save (no names: an
      // OrderedDict needs a module; the bytes written are the same).
      std::vector<torch::Tensor> state;
      for (const auto& t : spec.at("tensors")) {
        const auto dtype = t.at(1).get<std::string>() == "F32" ? torch::kFloat32 : torch::kBFloat16;
        state.push_back(torch::rand({t.at(2).get<int64_t>()}, torch::TensorOptions().dtype(dtype)));
      }
      std::filesystem::remove(path);
      const auto t0 = Clock::now();
      torch::save(state, path);
      fsync_path(path, O_RDONLY);
      fsync_path(std::filesystem::path(path).parent_path().string(), O_RDONLY | O_DIRECTORY);
      seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    } else {
      std::vector<torch::Tensor> loaded;
      const auto t0 = Clock::now();
      torch::load(loaded, path);
      seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    }
    std::printf("%s\n", nlohmann::json{{"seconds", seconds}, {"version", TORCH_VERSION}}.dump().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckptio-bench-libtorch-peer: %s\n", e.what());
    return 1;
  }
}
