// Writes a safetensors file, a sharded folder and a training checkpoint, and loads them back
// through the installed library (which needs no JSON library of the consumer).
#include <ckptio/checkpoint_io.h>
#include <ckptio/load.h>
#include <ckptio/safetensors.h>
#include <ckptio/sharded.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  std::vector<float> w(64);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.5f;
  std::vector<ckptio::NamedTensor> tensors = {
      {"layer.weight", ckptio::TensorView{ckptio::DType::F32, {8, 8}, std::as_bytes(std::span(w))}},
  };
  try {
    ckptio::save_safetensors(dir / "model.safetensors", tensors);
    auto reader = ckptio::SafetensorsReader::open(dir / "model.safetensors");
    ckptio::Tensor t = reader.read_owned("layer.weight");
    ckptio::save_sharded(dir / "sharded", tensors);
    auto loaded = ckptio::load_checkpoint(dir / "sharded");
    ckptio::CheckpointIO io(dir / "exp");
    ckptio::TrainingState state;
    state.model = ckptio::TensorMap{{"layer.weight", t}};
    state.sampler = R"({"seed": 7})";
    state.running.global_step = 1;
    io.save(state);
    std::string sampler;
    const ckptio::LoadResult resumed = io.load("latest", {.sampler = &sampler});
    const bool same = t.nbytes() == w.size() * sizeof(float) &&
                      std::equal(t.bytes().begin(), t.bytes().end(), std::as_bytes(std::span(w)).begin()) &&
                      loaded.tensors.size() == 1 && resumed.running.global_step == 1 &&
                      sampler == R"({"seed":7})" && io.verify(resumed.path).ok;
    std::printf("consumer: %s\n", same ? "round trip ok" : "MISMATCH");
    return same ? 0 : 1;
  } catch (const ckptio::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
