// libtorch adapters: a C++ training loop's state (module, EMA, optimizer, LR scheduler, sampler) as
// the components CheckpointIO saves, with the names and keys Python PyTorch uses, so that a
// checkpoint written from libtorch can be read by Python and the other way round.
//
// Built only with -DCKPTIO_WITH_TORCH=ON (library `ckptio_torch`). Every tensor handled here must
// live on the CPU; the adapters never move data between devices.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/optim/schedulers/step_lr.h>

#include "ckptio/checkpoint_io.h"
#include "ckptio/dtype.h"
#include "ckptio/mismatch.h"
#include "ckptio/sampler.h"
#include "ckptio/tensor.h"

namespace ckptio::libtorch {

// TensorMap (name -> tensor, sorted by name: the shape of a Python state_dict()) and
// OptimizerState come from CheckpointIO, so the adapters' output is what CheckpointIO::save takes.
//
// How a state is handed out (SnapshotMode):
//   Copy:   heap copies; the caller may change its tensors as soon as the call returns.
//   Borrow: zero-copy views of the live torch storage (each view keeps its storage alive). The
//           bytes change when training changes the tensors, so the caller must not step the
//           optimizer or update the EMA until the save holding the views has finished
//           (CheckpointIO's borrow contract). Give Borrow views to CheckpointIO in both of its
//           snapshot modes: in copy mode CheckpointIO makes the (one) copy itself.

// at::ScalarType <-> DType. Throws Error(Unsupported) for types safetensors cannot hold (quantized,
// complex double, ...).
DType dtype_of(c10::ScalarType type);
c10::ScalarType torch_dtype_of(DType dtype);

// A ckptio view (Borrow) or copy (Copy) of a CPU tensor. Borrow needs a contiguous tensor and
// throws Error(InvalidArgument) otherwise, as it does for a tensor on another device; `name` only
// labels the error.
Tensor from_torch(const at::Tensor& tensor, SnapshotMode mode, const std::string& name = "tensor");
// A new, owned torch tensor with a copy of the bytes.
at::Tensor to_torch(const Tensor& tensor);

// The module's parameters and buffers, recursively, named the way Python names the same module
// ("layers.0.attn.in_proj_weight"): libtorch modules registered under the Python attribute names
// produce the Python keys. Undefined (optional) tensors are skipped, like Python's None.
TensorMap module_state(const torch::nn::Module& module, SnapshotMode mode);

// Writable zero-copy views of the module's parameters and buffers, for readers that fill caller
// buffers (load_checkpoint). Valid while the module lives and its tensors are not replaced.
TensorMap module_targets(torch::nn::Module& module);

// Every difference between a module's tensors and a state: names only in the module (missing),
// names only in the state (unexpected), and names whose shape or dtype differ (mismatched,
// "name: checkpoint F16 [2, 3], model F32 [3, 3]").
[[nodiscard]] MismatchReport compare_module_state(const torch::nn::Module& module,
                                                  const TensorMap& state);
// Its former name.
using StateMismatch = MismatchReport;

// Copies `state` into the module's parameters and buffers (without recording autograd history).
// strict: any difference throws Error(Mismatch) listing every one (nothing is copied then).
// Not strict: copies the tensors whose names and shapes match, converting dtypes, and returns what
// was skipped or converted.
[[nodiscard]] MismatchReport load_module_state(torch::nn::Module& module, const TensorMap& state,
                                               bool strict = true);

// An exponential moving average of a module's parameters (the `ema` component): Open-Sora's
// update_ema, ema = decay * ema + (1 - decay) * param; buffers are copied as they are.
class Ema {
 public:
  // Starts as a copy of the module's parameters and buffers.
  explicit Ema(const torch::nn::Module& module);

  // Throws Error(Mismatch) when the module's tensors no longer match the EMA's names and shapes.
  void update(const torch::nn::Module& module, double decay);

  // The EMA weights under the module's names.
  TensorMap state(SnapshotMode mode) const;
  // Writable views for load_checkpoint into the EMA.
  TensorMap targets();
  // Same rules as load_module_state.
  [[nodiscard]] MismatchReport load_state(const TensorMap& state, bool strict = true);
  // Copies the EMA weights into a module of the same architecture (strict), e.g. for inference.
  void copy_to(torch::nn::Module& module) const;

  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }

 private:
  std::map<std::string, at::Tensor> tensors_;
  std::map<std::string, bool> is_parameter_;
};

// The optimizer component, keyed like Python's optimizer.state_dict(): parameters are numbered
// across param_groups in order ("0", "1", ...), each with its tensors (momentum_buffer; exp_avg,
// exp_avg_sq, max_exp_avg_sq) in OptimizerState::tensors, and everything else in meta:
//   {"type": "SGD"|"Adam"|"AdamW",
//    "param_groups": [{"lr": .., "betas": [..], "eps": .., "weight_decay": .., "amsgrad": ..,
//                      "params": [0, 1, ...]}, ...],           // SGD: momentum, dampening, nesterov
//    "state": {"0": {"step": 3}, ...}}                          // Adam and AdamW only
// Throws Error(Unsupported) for optimizers other than SGD, Adam and AdamW.
OptimizerState optimizer_state(const torch::optim::Optimizer& optimizer, SnapshotMode mode);

// Restores hyperparameters (the saved ones win, like Python's load_state_dict) and per-parameter
// state. The optimizer must have the same type, number of groups and parameters per group, and
// each state tensor the shape of its parameter; otherwise Error(Mismatch) lists every difference
// and the optimizer is left unchanged. State tensors are converted to the parameter's dtype.
void load_optimizer_state(torch::optim::Optimizer& optimizer, const OptimizerState& state);

// Sets every param group's learning rate.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// Linear warmup then cosine decay, per optimizer step. Python-like counting: after construction
// the optimizer has the LR of step 0, after n calls of step() that of step n:
//   s <  warmup: base * (s + 1) / (warmup + 1)          (Open-Sora's LinearWarmupLR)
//   s >= warmup: min + (base - min) * (1 + cos(pi * min(1, (s - warmup) / (total - warmup)))) / 2
class WarmupCosineLR : public torch::optim::LRScheduler {
 public:
  struct Options {
    int64_t warmup_steps = 0;
    int64_t total_steps = 1;
    double min_lr = 0.0;
  };
  // Takes the base LRs from the optimizer's groups, then sets the LR of step 0.
  WarmupCosineLR(torch::optim::Optimizer& optimizer, Options options);

  // The LR of step `s` for a group with base LR `base`.
  double lr_at(int64_t s, double base) const;
  int64_t last_step() const { return step_count_; }

  // {"type": "WarmupCosineLR", "last_epoch": n, "base_lrs": [..], "warmup_steps", "total_steps",
  //  "min_lr"}. load_state takes everything from the state (like Python) and applies its LR;
  // Error(Mismatch) for another type or a different number of groups.
  std::string state() const;  // JSON text
  void load_state(std::string_view state_json);

 private:
  std::vector<double> get_lrs() override;

  torch::optim::Optimizer& optimizer_;
  Options options_;
  std::vector<double> base_lrs_;
};

// libtorch's StepLR with its state: {"type": "StepLR", "step_size", "gamma", "step_count"}.
// step_count is libtorch's counter (number of step() calls); the LRs themselves live in the
// optimizer state. load_state throws Error(Mismatch) when step_size or gamma differ.
class StepLR : public torch::optim::StepLR {
 public:
  StepLR(torch::optim::Optimizer& optimizer, unsigned step_size, double gamma = 0.1);

  std::string state() const;  // JSON text
  void load_state(std::string_view state_json);

 private:
  unsigned step_size_;
  double gamma_;
};

}  // namespace ckptio::libtorch
