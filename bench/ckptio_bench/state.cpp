#include "ckptio_bench/state.h"

#include <algorithm>

#include <fmt/core.h>

#include "common/units.h"
#include "common/work_dir.h"

namespace ckptio::bench {

std::vector<StateTensor> make_state(uint64_t total) {
  std::vector<uint64_t> sizes;
  const uint64_t n_big = std::max<uint64_t>(1, total / (256 * kMiB));
  for (uint64_t i = 0; i < n_big; ++i) sizes.push_back(64 * kMiB);
  for (int i = 0; i < 1000; ++i) sizes.push_back(4 * kKiB);
  uint64_t used = n_big * 64 * kMiB + 1000 * 4 * kKiB;
  for (uint64_t i = 0; used < total; ++i) {
    uint64_t s = (1 + (i * 5) % 8) * kMiB;  // 1..8 MiB, cycling
    s = std::min(s, total - used);
    s &= ~uint64_t{3};
    if (s == 0) break;
    sizes.push_back(s);
    used += s;
  }
  std::vector<StateTensor> state;
  state.reserve(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    StateTensor t;
    const bool bf16 = i % 5 == 4;
    t.dtype = bf16 ? DType::BF16 : DType::F32;
    t.name = fmt::format("model.layers.{}.{}", i, bf16 ? "norm.weight" : "proj.weight");
    t.shape = {static_cast<int64_t>(sizes[i] / (bf16 ? 2 : 4))};
    t.size = sizes[i];
    t.data = std::shared_ptr<std::byte>(new std::byte[t.size], std::default_delete<std::byte[]>());
    fill_pseudo_random(t.data.get(), t.size, i + 1);
    state.push_back(std::move(t));
  }
  return state;
}

uint64_t state_bytes(const std::vector<StateTensor>& state) {
  uint64_t n = 0;
  for (const auto& t : state) n += t.size;
  return n;
}

std::vector<NamedTensor> named_tensors(const std::vector<StateTensor>& state) {
  std::vector<NamedTensor> v;
  v.reserve(state.size());
  for (const auto& t : state) {
    v.push_back({t.name, TensorView{t.dtype, t.shape, {t.data.get(), t.size}}});
  }
  return v;
}

}  // namespace ckptio::bench
