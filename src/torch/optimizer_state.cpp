// Optimizers (SGD, Adam, AdamW) and LR schedulers as the optimizer and lr_scheduler components,
// keyed the way Python's optimizer.state_dict() keys them.
#include <nlohmann/json.hpp>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <c10/util/string_utils.h>
#include <fmt/format.h>

#include <cmath>
#include <numbers>
#include <set>

#include "ckptio/error.h"
#include "ckptio/torch.h"

namespace ckptio::libtorch {

namespace {

using nlohmann::json;

enum class Kind { SGD, Adam, AdamW };

Kind kind_of(const torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return Kind::SGD;
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return Kind::AdamW;
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return Kind::Adam;
  throw Error(ErrorCode::Unsupported,
              "optimizer state: only torch::optim::SGD, Adam and AdamW are supported");
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::SGD: return "SGD";
    case Kind::Adam: return "Adam";
    case Kind::AdamW: return "AdamW";
  }
  return "?";
}

// libtorch keys per-parameter state by the address of the parameter's TensorImpl, as a string.
std::string state_key(const at::Tensor& param) {
  return c10::guts::to_string(param.unsafeGetTensorImpl());
}

std::string tensor_name(size_t index, std::string_view key) {
  return fmt::format("state.{}.{}", index, key);
}

const Tensor* find_tensor(const OptimizerState& state, size_t index, const std::string& key) {
  auto param = state.tensors.find(std::to_string(index));
  if (param == state.tensors.end()) return nullptr;
  auto it = param->second.find(key);
  return it == param->second.end() ? nullptr : &it->second;
}

template <typename Options>
json adam_hyperparameters(const Options& o) {
  return json{{"lr", o.lr()},
              {"betas", {std::get<0>(o.betas()), std::get<1>(o.betas())}},
              {"eps", o.eps()},
              {"weight_decay", o.weight_decay()},
              {"amsgrad", o.amsgrad()}};
}

json sgd_hyperparameters(const torch::optim::SGDOptions& o) {
  return json{{"lr", o.lr()},
              {"momentum", o.momentum()},
              {"dampening", o.dampening()},
              {"weight_decay", o.weight_decay()},
              {"nesterov", o.nesterov()}};
}

json hyperparameters(Kind kind, const torch::optim::OptimizerOptions& options) {
  switch (kind) {
    case Kind::SGD:
      return sgd_hyperparameters(static_cast<const torch::optim::SGDOptions&>(options));
    case Kind::Adam:
      return adam_hyperparameters(static_cast<const torch::optim::AdamOptions&>(options));
    case Kind::AdamW:
      return adam_hyperparameters(static_cast<const torch::optim::AdamWOptions&>(options));
  }
  return {};
}

template <typename Options>
void set_adam_hyperparameters(Options& o, const json& g) {
  o.lr(g.at("lr").get<double>());
  const auto& betas = g.at("betas");
  o.betas(std::make_tuple(betas.at(0).get<double>(), betas.at(1).get<double>()));
  o.eps(g.at("eps").get<double>());
  o.weight_decay(g.at("weight_decay").get<double>());
  o.amsgrad(g.at("amsgrad").get<bool>());
}

void set_hyperparameters(Kind kind, torch::optim::OptimizerOptions& options, const json& g) {
  switch (kind) {
    case Kind::SGD: {
      auto& o = static_cast<torch::optim::SGDOptions&>(options);
      o.lr(g.at("lr").get<double>());
      o.momentum(g.at("momentum").get<double>());
      o.dampening(g.at("dampening").get<double>());
      o.weight_decay(g.at("weight_decay").get<double>());
      o.nesterov(g.at("nesterov").get<bool>());
      return;
    }
    case Kind::Adam:
      set_adam_hyperparameters(static_cast<torch::optim::AdamOptions&>(options), g);
      return;
    case Kind::AdamW:
      set_adam_hyperparameters(static_cast<torch::optim::AdamWOptions&>(options), g);
      return;
  }
}

void put(OptimizerState& out, size_t index, const std::string& key, const at::Tensor& t,
         SnapshotMode mode) {
  if (!t.defined()) return;
  out.tensors[std::to_string(index)].emplace(key, from_torch(t, mode, tensor_name(index, key)));
}

template <typename State>
void adam_state_out(const State& s, size_t index, SnapshotMode mode, OptimizerState& out,
                    json& meta) {
  meta["state"][std::to_string(index)] = json{{"step", s.step()}};
  put(out, index, "exp_avg", s.exp_avg(), mode);
  put(out, index, "exp_avg_sq", s.exp_avg_sq(), mode);
  put(out, index, "max_exp_avg_sq", s.max_exp_avg_sq(), mode);
}

// Builds the restored per-parameter state of one parameter, or records why it cannot.
class StateBuilder {
 public:
  StateBuilder(const OptimizerState& saved, std::vector<std::string>& problems)
      : saved_(saved), problems_(problems) {}

  // A tensor of the parameter's shape and dtype; undefined when absent (and `required` is false).
  at::Tensor tensor(size_t index, const std::string& key, const at::Tensor& param,
                    bool required) {
    const std::string name = tensor_name(index, key);
    used_.insert(name);
    const Tensor* saved = find_tensor(saved_, index, key);
    if (saved == nullptr) {
      if (required) problems_.push_back(fmt::format("missing tensor {}", name));
      return {};
    }
    const Shape shape(param.sizes().begin(), param.sizes().end());
    if (saved->shape() != shape) {
      problems_.push_back(fmt::format("{}: checkpoint shape {}, parameter {}", name,
                                      shape_to_string(saved->shape()), shape_to_string(shape)));
      return {};
    }
    return to_torch(*saved).to(param.scalar_type());
  }

  std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const auto& [param, tensors] : saved_.tensors) {
      for (const auto& [key, t] : tensors) {
        const std::string name = fmt::format("state.{}.{}", param, key);
        if (!used_.count(name)) out.push_back(name);
      }
    }
    return out;
  }

 private:
  const OptimizerState& saved_;
  std::vector<std::string>& problems_;
  std::set<std::string> used_;
};

}  // namespace

OptimizerState optimizer_state(const torch::optim::Optimizer& optimizer, SnapshotMode mode) {
  const Kind kind = kind_of(optimizer);
  OptimizerState out;
  json meta = json{{"type", kind_name(kind)}, {"param_groups", json::array()},
                   {"state", json::object()}};
  size_t index = 0;
  for (const auto& group : optimizer.param_groups()) {
    json g = hyperparameters(kind, group.options());
    g["params"] = json::array();
    for (const auto& param : group.params()) {
      g["params"].push_back(index);
      auto it = optimizer.state().find(state_key(param));
      if (it != optimizer.state().end()) {
        const auto& s = *it->second;
        switch (kind) {
          case Kind::SGD:
            put(out, index, "momentum_buffer",
                static_cast<const torch::optim::SGDParamState&>(s).momentum_buffer(), mode);
            break;
          case Kind::Adam:
            adam_state_out(static_cast<const torch::optim::AdamParamState&>(s), index, mode, out,
                           meta);
            break;
          case Kind::AdamW:
            adam_state_out(static_cast<const torch::optim::AdamWParamState&>(s), index, mode, out,
                           meta);
            break;
        }
      }
      ++index;
    }
    meta["param_groups"].push_back(std::move(g));
  }
  out.meta = meta.dump();
  return out;
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, const OptimizerState& saved) {
  const Kind kind = kind_of(optimizer);
  std::vector<std::string> problems;
  using StatePtr = std::unique_ptr<torch::optim::OptimizerParamState>;
  std::vector<std::pair<std::string, StatePtr>> restored;
  try {
    const json j = json::parse(saved.meta);
    const std::string type = j.at("type").get<std::string>();
    if (type != kind_name(kind)) {
      throw Error(ErrorCode::Mismatch,
                  fmt::format("load optimizer state: checkpoint holds {}, optimizer is {}", type,
                              kind_name(kind)));
    }
    const json& groups = j.at("param_groups");
    auto& own_groups = optimizer.param_groups();
    if (groups.size() != own_groups.size()) {
      problems.push_back(fmt::format("checkpoint has {} param groups, optimizer {}",
                                     groups.size(), own_groups.size()));
    }
    const json& states = j.contains("state") ? j.at("state") : json::object();
    StateBuilder builder(saved, problems);
    size_t index = 0;
    for (size_t gi = 0; gi < std::min(groups.size(), own_groups.size()); ++gi) {
      const auto& params = own_groups[gi].params();
      const size_t saved_count = groups[gi].at("params").size();
      if (saved_count != params.size()) {
        problems.push_back(fmt::format("param group {}: checkpoint has {} parameters, optimizer {}",
                                       gi, saved_count, params.size()));
        index += params.size();
        continue;
      }
      for (const auto& param : params) {
        const std::string key = std::to_string(index);
        StatePtr state;
        if (kind == Kind::SGD) {
          at::Tensor buf = builder.tensor(index, "momentum_buffer", param, false);
          if (buf.defined()) {
            auto s = std::make_unique<torch::optim::SGDParamState>();
            s->momentum_buffer(buf);
            state = std::move(s);
          }
        } else if (states.contains(key)) {
          const int64_t step = states.at(key).at("step").get<int64_t>();
          const bool amsgrad = groups[gi].at("amsgrad").get<bool>();
          at::Tensor exp_avg = builder.tensor(index, "exp_avg", param, true);
          at::Tensor exp_avg_sq = builder.tensor(index, "exp_avg_sq", param, true);
          at::Tensor max_sq = builder.tensor(index, "max_exp_avg_sq", param, amsgrad);
          auto fill = [&](auto s) {
            s->step(step);
            s->exp_avg(exp_avg);
            s->exp_avg_sq(exp_avg_sq);
            if (max_sq.defined()) s->max_exp_avg_sq(max_sq);
            state = std::move(s);
          };
          if (kind == Kind::Adam) {
            fill(std::make_unique<torch::optim::AdamParamState>());
          } else {
            fill(std::make_unique<torch::optim::AdamWParamState>());
          }
        }
        if (state) restored.emplace_back(state_key(param), std::move(state));
        ++index;
      }
    }
    for (const auto& name : builder.unused()) {
      problems.push_back(fmt::format("unexpected tensor {}", name));
    }
    if (!problems.empty()) {
      std::string list;
      for (const auto& p : problems) list += "\n  " + p;
      throw Error(ErrorCode::Mismatch,
                  fmt::format("load {} state: {} mismatch{}:{}", kind_name(kind), problems.size(),
                              problems.size() == 1 ? "" : "es", list));
    }
    for (size_t gi = 0; gi < own_groups.size(); ++gi) {
      set_hyperparameters(kind, own_groups[gi].options(), groups[gi]);
    }
  } catch (const json::exception& e) {
    throw Error(ErrorCode::Corrupt, fmt::format("optimizer state JSON: {}", e.what()));
  }
  optimizer.state().clear();
  for (auto& [key, state] : restored) optimizer.state()[key] = std::move(state);
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

WarmupCosineLR::WarmupCosineLR(torch::optim::Optimizer& optimizer, Options options)
    : torch::optim::LRScheduler(optimizer), optimizer_(optimizer), options_(options) {
  if (options_.warmup_steps < 0 || options_.total_steps < 1) {
    throw Error(ErrorCode::InvalidArgument,
                "WarmupCosineLR: warmup_steps must be >= 0 and total_steps >= 1");
  }
  for (const auto& group : optimizer.param_groups()) base_lrs_.push_back(group.options().get_lr());
  for (size_t i = 0; i < base_lrs_.size(); ++i) {
    optimizer_.param_groups()[i].options().set_lr(lr_at(0, base_lrs_[i]));
  }
}

double WarmupCosineLR::lr_at(int64_t s, double base) const {
  const int64_t warmup = options_.warmup_steps;
  if (s < warmup) {
    return base * static_cast<double>(s + 1) / static_cast<double>(warmup + 1);
  }
  const double span = static_cast<double>(std::max<int64_t>(1, options_.total_steps - warmup));
  const double progress = std::min(1.0, static_cast<double>(s - warmup) / span);
  return options_.min_lr +
         (base - options_.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

std::vector<double> WarmupCosineLR::get_lrs() {
  // step() calls this before counting the step, so the step being entered is step_count_ + 1.
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(lr_at(static_cast<int64_t>(step_count_) + 1, base));
  return lrs;
}

std::string WarmupCosineLR::state() const {
  return nlohmann::json{{"type", "WarmupCosineLR"},
                        {"last_epoch", step_count_},
                        {"base_lrs", base_lrs_},
                        {"warmup_steps", options_.warmup_steps},
                        {"total_steps", options_.total_steps},
                        {"min_lr", options_.min_lr}}
      .dump();
}

void WarmupCosineLR::load_state(std::string_view state_json) {
  try {
    const json state = json::parse(state_json);
    if (state.at("type").get<std::string>() != "WarmupCosineLR") {
      throw Error(ErrorCode::Mismatch,
                  fmt::format("lr_scheduler state is {}, not WarmupCosineLR",
                              state.at("type").get<std::string>()));
    }
    auto base_lrs = state.at("base_lrs").get<std::vector<double>>();
    if (base_lrs.size() != optimizer_.param_groups().size()) {
      throw Error(ErrorCode::Mismatch,
                  fmt::format("lr_scheduler state has {} groups, the optimizer {}",
                              base_lrs.size(), optimizer_.param_groups().size()));
    }
    Options options{state.at("warmup_steps").get<int64_t>(), state.at("total_steps").get<int64_t>(),
                    state.at("min_lr").get<double>()};
    const auto last = state.at("last_epoch").get<int64_t>();
    if (last < 0 || options.warmup_steps < 0 || options.total_steps < 1) {
      throw Error(ErrorCode::Corrupt, "lr_scheduler state: negative step or bad options");
    }
    options_ = options;
    base_lrs_ = std::move(base_lrs);
    step_count_ = static_cast<unsigned>(last);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Corrupt, fmt::format("lr_scheduler state JSON: {}", e.what()));
  }
  for (size_t i = 0; i < base_lrs_.size(); ++i) {
    optimizer_.param_groups()[i].options().set_lr(
        lr_at(static_cast<int64_t>(step_count_), base_lrs_[i]));
  }
}

StepLR::StepLR(torch::optim::Optimizer& optimizer, unsigned step_size, double gamma)
    : torch::optim::StepLR(optimizer, step_size, gamma), step_size_(step_size), gamma_(gamma) {}

std::string StepLR::state() const {
  return nlohmann::json{
      {"type", "StepLR"}, {"step_size", step_size_}, {"gamma", gamma_}, {"step_count", step_count_}}
      .dump();
}

void StepLR::load_state(std::string_view state_json) {
  try {
    const json state = json::parse(state_json);
    if (state.at("type").get<std::string>() != "StepLR") {
      throw Error(ErrorCode::Mismatch, fmt::format("lr_scheduler state is {}, not StepLR",
                                                   state.at("type").get<std::string>()));
    }
    const auto step_size = state.at("step_size").get<unsigned>();
    const auto gamma = state.at("gamma").get<double>();
    if (step_size != step_size_ || gamma != gamma_) {
      throw Error(ErrorCode::Mismatch,
                  fmt::format("StepLR state has step_size {} gamma {}, the scheduler {} and {}",
                              step_size, gamma, step_size_, gamma_));
    }
    step_count_ = state.at("step_count").get<unsigned>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Corrupt, fmt::format("lr_scheduler state JSON: {}", e.what()));
  }
}

}  // namespace ckptio::libtorch
