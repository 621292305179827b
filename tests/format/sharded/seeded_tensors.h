// Tensors with distinct, reproducible contents derived from a seed, kept alive together with
// their names: what the sharded-folder tests save and expect back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ckptio/safetensors.h"
#include "ckptio/tensor.h"

namespace ckptio::testing {

struct SeededTensors {
  std::vector<std::string> names;
  std::vector<Tensor> tensors;

  std::vector<NamedTensor> views() const {
    std::vector<NamedTensor> v;
    for (size_t i = 0; i < names.size(); ++i) v.push_back({names[i], tensors[i].view()});
    return v;
  }
  void add(std::string name, DType dtype, Shape shape, unsigned seed) {
    Tensor t = Tensor::zeros(dtype, std::move(shape));
    auto b = t.mutable_bytes();
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>((i * 131 + seed * 7 + 1) & 0xff);
    names.push_back(std::move(name));
    tensors.push_back(std::move(t));
  }
};

}  // namespace ckptio::testing
