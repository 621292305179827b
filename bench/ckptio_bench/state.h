// The model-like state ckptio-bench saves and loads: a few 64 MiB tensors (one per 256 MiB), a
// thousand of 4 KiB and 1-8 MiB tensors for the rest; mostly F32 with some BF16.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ckptio/safetensors.h"
#include "ckptio/tensor.h"

namespace ckptio::bench {

struct StateTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::shared_ptr<std::byte> data;
  size_t size = 0;
};

std::vector<StateTensor> make_state(uint64_t total_bytes);
uint64_t state_bytes(const std::vector<StateTensor>& state);
std::vector<NamedTensor> named_tensors(const std::vector<StateTensor>& state);

}  // namespace ckptio::bench
