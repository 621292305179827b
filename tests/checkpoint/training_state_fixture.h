// A deterministic training state per step, so that a test (or a crashed child process) can
// rebuild exactly what was saved at any step and compare it with what loads.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "ckptio/checkpoint_io.h"

namespace ckptio::testing {

// The JSON value of a component's JSON text, to compare values rather than spellings.
inline nlohmann::json json_of(std::string_view text) { return nlohmann::json::parse(text); }

// Fills a tensor with values derived from (seed, name) so that every tensor differs.
inline Tensor patterned_tensor(DType dtype, Shape shape, uint64_t seed) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  auto bytes = t.mutable_bytes();
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (size_t i = 0; i < bytes.size(); ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    bytes[i] = static_cast<std::byte>(x & 0xff);
  }
  return t;
}

inline uint64_t name_seed(const std::string& name, int64_t step) {
  uint64_t h = 1469598103934665603ull;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h ^ static_cast<uint64_t>(step) * 0x2545F4914F6CDD1Dull;
}

// `scale` multiplies the size of the big tensors (1 = about 200 KiB in total).
inline TrainingState make_training_state(int64_t step, int scale = 1) {
  TrainingState s;
  s.model.emplace();
  s.model->emplace("embed.weight", patterned_tensor(DType::F32, {64 * scale, 256},
                                                    name_seed("embed.weight", step)));
  s.model->emplace("blocks.0.attn.qkv.weight",
                   patterned_tensor(DType::BF16, {96, 128}, name_seed("qkv", step)));
  s.model->emplace("blocks.0.attn.qkv.bias",
                   patterned_tensor(DType::F32, {96}, name_seed("qkv.bias", step)));
  s.model->emplace("blocks.0.norm.scale", patterned_tensor(DType::F16, {}, name_seed("s", step)));
  s.model->emplace("empty", patterned_tensor(DType::F32, {0, 4}, 0));
  s.ema.emplace();
  for (const auto& [name, t] : *s.model) {
    s.ema->emplace(name, patterned_tensor(t.dtype(), t.shape(), name_seed("ema." + name, step)));
  }
  s.optimizer.emplace();
  int param = 0;
  for (const auto& [name, t] : *s.model) {
    const std::string p = std::to_string(param++);
    auto& slot = s.optimizer->tensors[p];
    slot["exp_avg"] = patterned_tensor(DType::F32, t.shape(), name_seed("m." + name, step));
    slot["exp_avg_sq"] = patterned_tensor(DType::F32, t.shape(), name_seed("v." + name, step));
    slot["step"] = patterned_tensor(DType::F32, {}, name_seed("step." + name, step));
  }
  s.optimizer->meta = nlohmann::json{{"param_groups",
                                      {{{"lr", 1e-4 * static_cast<double>(step)},
                                        {"betas", {0.9, 0.999}},
                                        {"weight_decay", 0.01},
                                        {"params", {0, 1, 2, 3, 4}}}}},
                                     {"state_note", "step " + std::to_string(step)}}
                          .dump();
  s.lr_scheduler = nlohmann::json{{"last_epoch", step}, {"base_lrs", {1e-4}}}.dump();
  s.sampler = nlohmann::json{{"seed", 42}, {"epoch", step / 10}, {"index", step * 8}}.dump();
  s.running = RunningStates{step / 10, step % 10, step, 8, step / 2};
  s.extra = nlohmann::json{{"note", "step " + std::to_string(step)}}.dump();
  return s;
}

inline void expect_tensor_maps_equal(const TensorMap& a, const TensorMap& b,
                                     const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    ASSERT_NE(it, b.end()) << what << ": " << name;
    EXPECT_EQ(t.dtype(), it->second.dtype()) << what << ": " << name;
    EXPECT_EQ(t.shape(), it->second.shape()) << what << ": " << name;
    ASSERT_EQ(t.nbytes(), it->second.nbytes()) << what << ": " << name;
    EXPECT_TRUE(t.nbytes() == 0 ||
                std::memcmp(t.bytes().data(), it->second.bytes().data(), t.nbytes()) == 0)
        << what << ": bytes of " << name << " differ";
  }
}

// Loads everything from `path_or_latest` and compares it with `expected`.
inline void expect_checkpoint_equals(CheckpointIO& io, const std::string& path_or_latest,
                                     const TrainingState& expected) {
  TensorMap model, ema;
  OptimizerState optimizer;
  std::string lr, sampler;
  LoadTargets targets{&model, &ema, &optimizer, &lr, &sampler};
  const LoadResult r = io.load(path_or_latest, targets);
  expect_tensor_maps_equal(model, *expected.model, "model");
  expect_tensor_maps_equal(ema, *expected.ema, "ema");
  ASSERT_EQ(optimizer.tensors.size(), expected.optimizer->tensors.size());
  for (const auto& [p, m] : expected.optimizer->tensors) {
    expect_tensor_maps_equal(optimizer.tensors[p], m, "optimizer param " + p);
  }
  EXPECT_EQ(json_of(optimizer.meta), json_of(expected.optimizer->meta));
  EXPECT_EQ(json_of(lr), json_of(*expected.lr_scheduler));
  EXPECT_EQ(json_of(sampler), json_of(*expected.sampler));
  EXPECT_EQ(r.running.epoch, expected.running.epoch);
  EXPECT_EQ(r.running.step, expected.running.step);
  EXPECT_EQ(r.running.global_step, expected.running.global_step);
  EXPECT_EQ(r.running.batch_size, expected.running.batch_size);
  EXPECT_EQ(r.running.actual_update_step, expected.running.actual_update_step);
  EXPECT_EQ(json_of(r.extra), json_of(expected.extra));
}

}  // namespace ckptio::testing
