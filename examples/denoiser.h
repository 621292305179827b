// The demo's network: a small DiT-like denoiser (patch tokens in, velocity out) built from libtorch
// modules registered under the names the same network has in Python PyTorch, so its checkpoint
// keys ("blocks.0.attn.in_proj_weight", "blocks.0.mlp.0.weight", ...) read the same on both sides.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>

namespace demo {

struct DenoiserConfig {
  int64_t channels = 16;  // features per token
  int64_t tokens = 16;    // sequence length
  int64_t dim = 128;
  int64_t depth = 3;
  int64_t heads = 4;
};

// Sinusoidal features of the diffusion time, as DiT's TimestepEmbedder computes them.
inline torch::Tensor timestep_features(const torch::Tensor& t, int64_t n) {
  const int64_t half = n / 2;
  auto freqs = torch::exp(-std::log(10000.0) * torch::arange(half, torch::kFloat) / half);
  auto args = (t * 1000.0).unsqueeze(1) * freqs.unsqueeze(0);
  return torch::cat({torch::cos(args), torch::sin(args)}, 1);
}

// Pre-norm transformer block conditioned on the time embedding (added before attention).
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t dim, int64_t heads)
      : norm1_(register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        attn_(register_module("attn", torch::nn::MultiheadAttention(dim, heads))),
        norm2_(register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        mlp_(register_module("mlp", torch::nn::Sequential(torch::nn::Linear(dim, 4 * dim),
                                                          torch::nn::GELU(),
                                                          torch::nn::Linear(4 * dim, dim)))) {}

  // x: [tokens, batch, dim] (MultiheadAttention's layout), cond: [batch, dim].
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& cond) {
    auto h = norm1_(x) + cond.unsqueeze(0);
    x = x + std::get<0>(attn_->forward(h, h, h, /*key_padding_mask=*/{}, /*need_weights=*/false));
    return x + mlp_->forward(norm2_(x));
  }

 private:
  torch::nn::LayerNorm norm1_;
  torch::nn::MultiheadAttention attn_;
  torch::nn::LayerNorm norm2_;
  torch::nn::Sequential mlp_;
};
TORCH_MODULE(Block);

class DenoiserImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kFrequencies = 64;

  explicit DenoiserImpl(const DenoiserConfig& c)
      : config_(c),
        x_embedder_(register_module("x_embedder", torch::nn::Linear(c.channels, c.dim))),
        t_embedder_(register_module(
            "t_embedder", torch::nn::Sequential(torch::nn::Linear(kFrequencies, c.dim),
                                                torch::nn::SiLU(), torch::nn::Linear(c.dim, c.dim)))),
        blocks_(register_module("blocks", torch::nn::ModuleList())),
        final_norm_(register_module("final_norm",
                                    torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        final_layer_(register_module("final_layer", torch::nn::Linear(c.dim, c.channels))) {
    pos_embed_ = register_parameter("pos_embed", torch::randn({c.tokens, c.dim}) * 0.02);
    for (int64_t i = 0; i < c.depth; ++i) blocks_->push_back(Block(c.dim, c.heads));
  }

  // x: [batch, tokens, channels], t: [batch] in [0, 1]. Returns the predicted velocity.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) {
    auto h = (x_embedder_(x) + pos_embed_.unsqueeze(0)).transpose(0, 1);
    auto cond = t_embedder_->forward(timestep_features(t, kFrequencies));
    for (const auto& block : *blocks_) h = block->as<BlockImpl>()->forward(h, cond);
    return final_layer_(final_norm_(h)).transpose(0, 1);
  }

  const DenoiserConfig& config() const { return config_; }

 private:
  DenoiserConfig config_;
  torch::nn::Linear x_embedder_;
  torch::nn::Sequential t_embedder_;
  torch::nn::ModuleList blocks_;
  torch::nn::LayerNorm final_norm_;
  torch::nn::Linear final_layer_;
  torch::Tensor pos_embed_;
};
TORCH_MODULE(Denoiser);

}  // namespace demo
