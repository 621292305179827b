// A program linked against ckptio::load alone, the way an inference engine that reads only local
// files links it: it must not need libcurl or OpenSSL (load_links_without_network checks its
// dynamic section). It also loads a file, and shows that an hf:// source without a Hub resolver is
// refused rather than fetched.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/load.h"
#include "ckptio/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FOLDER\n", argv[0]);
    return 2;
  }
  const std::filesystem::path file = std::filesystem::path(argv[1]) / "w.safetensors";
  std::filesystem::create_directories(file.parent_path());
  const std::vector<float> values{1.5f, -2.0f, 3.25f};
  const ckptio::NamedTensor t{"w", {ckptio::DType::F32, {3}, std::as_bytes(std::span(values))}};
  ckptio::save_safetensors(file, std::span(&t, 1));

  const ckptio::LoadedCheckpoint ck = ckptio::load_checkpoint(file);
  const ckptio::Tensor& w = ck.tensors.at("w");
  if (w.nbytes() != sizeof(float) * values.size() ||
      std::memcmp(w.bytes().data(), values.data(), w.nbytes()) != 0) {
    std::fprintf(stderr, "loaded values differ from the saved ones\n");
    return 1;
  }
  for (const char* source : {"hf://org/name", "org/name"}) {
    try {
      (void)ckptio::load_checkpoint(source);
      std::fprintf(stderr, "'%s' loaded without a Hub resolver\n", source);
      return 1;
    } catch (const ckptio::Error& e) {
      std::printf("%s: %s\n", source, e.what());
    }
  }
  return 0;
}
