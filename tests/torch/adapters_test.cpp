// libtorch adapters: module state names and zero-copy views, strict loads, optimizer and scheduler
// state round trips, EMA, and interop with Python PyTorch through safetensors files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "ckptio/torch.h"
#include "support/test_util.h"

namespace {

namespace lt = ckptio::libtorch;
using ckptio::testing::TempDir;
using nlohmann::json;

// The same network as kPythonNet below: names follow the Python attributes.
struct LayerImpl : torch::nn::Module {
  LayerImpl(int64_t dim, int64_t heads)
      : attn(register_module("attn", torch::nn::MultiheadAttention(dim, heads))),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        mlp(register_module("mlp", torch::nn::Sequential(torch::nn::Linear(dim, 2 * dim),
                                                         torch::nn::GELU(),
                                                         torch::nn::Linear(2 * dim, dim)))) {}
  torch::Tensor forward(torch::Tensor x) {
    auto h = norm(x);
    x = x + std::get<0>(attn->forward(h, h, h, {}, false));
    return x + mlp->forward(x);
  }
  torch::nn::MultiheadAttention attn;
  torch::nn::LayerNorm norm;
  torch::nn::Sequential mlp;
};
TORCH_MODULE(Layer);

struct NetImpl : torch::nn::Module {
  NetImpl(int64_t dim, int64_t depth, int64_t heads = 2)
      : embed(register_module("embed", torch::nn::Linear(4, dim))),
        layers(register_module("layers", torch::nn::ModuleList())),
        bn(register_module("bn", torch::nn::BatchNorm1d(dim))),
        head(register_module("head", torch::nn::Linear(dim, 3))) {
    for (int64_t i = 0; i < depth; ++i) layers->push_back(Layer(dim, heads));
  }
  // x: [tokens, batch, 4] -> [tokens, batch, 3]
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = embed(x);
    for (const auto& layer : *layers) h = layer->as<LayerImpl>()->forward(h);
    h = bn(h.permute({1, 2, 0})).permute({2, 0, 1});
    return head(h);
  }
  torch::nn::Linear embed;
  torch::nn::ModuleList layers;
  torch::nn::BatchNorm1d bn;
  torch::nn::Linear head;
};
TORCH_MODULE(Net);

// Minimal safetensors reader and writer for the Python side (the Debian Python has no
// `safetensors` package), plus the same network.
const char* kPythonNet = R"PY(
import json, struct, sys
import numpy as np
import torch
from torch import nn

DT = {"float32": "F32", "float64": "F64", "int64": "I64"}
NP = {"F32": np.float32, "F64": np.float64, "I64": np.int64}

def save_st(path, tensors):
    header, blobs, off = {}, [], 0
    for k, t in tensors.items():
        a = t.detach().contiguous().numpy()
        b = a.tobytes()
        header[k] = {"dtype": DT[str(a.dtype)], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)

def load_st(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        a = np.frombuffer(data[8 + n + s:8 + n + e], dtype=NP[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(a.copy())
    return out

class Layer(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
    def forward(self, x):
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(x)

class Net(nn.Module):
    def __init__(self, dim, depth, heads=2):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.layers = nn.ModuleList([Layer(dim, heads) for _ in range(depth)])
        self.bn = nn.BatchNorm1d(dim)
        self.head = nn.Linear(dim, 3)
    def forward(self, x):
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        h = self.bn(h.permute(1, 2, 0)).permute(2, 0, 1)
        return self.head(h)
)PY";

void save_map(const std::filesystem::path& path, const ckptio::TensorMap& map) {
  std::vector<ckptio::NamedTensor> named;
  for (const auto& [name, t] : map) named.push_back({name, t.view()});
  ckptio::SafetensorsWriteOptions options;
  options.sync = false;
  ckptio::save_safetensors(path, named, options);
}

ckptio::TensorMap load_map(const std::filesystem::path& path) {
  const auto reader = ckptio::SafetensorsReader::open(path);
  ckptio::TensorMap out;
  for (const auto& info : reader.tensors()) out.emplace(info.name, reader.read_owned(info.name));
  return out;
}

// Writes and reads back the optimizer component the way CheckpointIO lays it out (tensors in one
// safetensors file named state.<param>.<key>, everything else as JSON), so the round trip goes
// through real bytes.
ckptio::OptimizerState through_files(const TempDir& dir, const ckptio::OptimizerState& state) {
  ckptio::TensorMap flat;
  for (const auto& [param, tensors] : state.tensors) {
    for (const auto& [key, t] : tensors) flat.emplace("state." + param + "." + key, t);
  }
  save_map(dir / "optimizer.safetensors", flat);
  ckptio::testing::write_file(dir / "optimizer.json", state.meta);
  ckptio::OptimizerState back;
  for (const auto& [name, t] : load_map(dir / "optimizer.safetensors")) {
    const auto first = name.find('.');
    const auto second = name.find('.', first + 1);
    back.tensors[name.substr(first + 1, second - first - 1)].emplace(name.substr(second + 1), t);
  }
  back.meta = ckptio::testing::read_file(dir / "optimizer.json");
  return back;
}

bool bytes_equal(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

void expect_modules_bit_identical(torch::nn::Module& a, torch::nn::Module& b) {
  const auto sa = lt::module_state(a, ckptio::SnapshotMode::Borrow);
  const auto sb = lt::module_state(b, ckptio::SnapshotMode::Borrow);
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [name, t] : sa) {
    const auto& u = sb.at(name);
    EXPECT_TRUE(std::equal(t.bytes().begin(), t.bytes().end(), u.bytes().begin(), u.bytes().end()))
        << name;
  }
}

torch::Tensor fixed_input(int64_t seed) {
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  return at::randn({5, 3, 4}, gen, torch::TensorOptions().dtype(torch::kFloat));
}

TEST(TorchModuleState, NamesShapesAndDtypesMatchPython) {
  if (!ckptio::testing::python_has_torch()) GTEST_SKIP() << "no PyTorch in /usr/bin/python3";
  TempDir dir;
  const std::string script = std::string(kPythonNet) + R"PY(
net = Net(8, 2)
print(json.dumps({k: [list(v.shape), DT[str(v.numpy().dtype)]] for k, v in net.state_dict().items()}),
      file=open(sys.argv[1], "w"))
)PY";
  ASSERT_EQ(ckptio::testing::run_python(dir.path(), script, (dir / "names.json").string()), 0);
  const json python = json::parse(ckptio::testing::read_file(dir / "names.json"));
  Net net(8, 2);
  const auto state = lt::module_state(*net, ckptio::SnapshotMode::Copy);
  json ours = json::object();
  for (const auto& [name, t] : state) {
    ours[name] = json::array({t.shape(), std::string(ckptio::dtype_name(t.dtype()))});
  }
  EXPECT_EQ(ours, python);
  EXPECT_TRUE(state.count("layers.0.attn.in_proj_weight"));
  EXPECT_TRUE(state.count("bn.num_batches_tracked"));
}

TEST(TorchModuleState, BorrowIsZeroCopyAndCopyIsNot) {
  Net net(8, 1);
  const auto borrowed = lt::module_state(*net, ckptio::SnapshotMode::Borrow);
  const auto copied = lt::module_state(*net, ckptio::SnapshotMode::Copy);
  const at::Tensor weight = net->head->weight;
  const auto& b = borrowed.at("head.weight");
  const auto& c = copied.at("head.weight");
  EXPECT_EQ(static_cast<const void*>(b.bytes().data()), weight.data_ptr());
  EXPECT_NE(static_cast<const void*>(c.bytes().data()), weight.data_ptr());
  EXPECT_EQ(b.storage(), ckptio::Tensor::Storage::Borrowed);
  {
    torch::NoGradGuard no_grad;
    weight.fill_(2.5f);
  }
  float seen = 0;
  std::memcpy(&seen, b.bytes().data(), sizeof seen);
  EXPECT_EQ(seen, 2.5f);
  std::memcpy(&seen, c.bytes().data(), sizeof seen);
  EXPECT_NE(seen, 2.5f);
  // A borrowed view keeps the storage alive after the module is gone.
  auto keep = borrowed;
  net = nullptr;
  std::memcpy(&seen, keep.at("head.weight").bytes().data(), sizeof seen);
  EXPECT_EQ(seen, 2.5f);
}

TEST(TorchModuleState, RoundTripThroughSafetensorsGivesSameOutputs) {
  TempDir dir;
  torch::manual_seed(1);
  Net a(8, 2);
  a->eval();
  save_map(dir / "w.safetensors", lt::module_state(*a, ckptio::SnapshotMode::Borrow));
  torch::manual_seed(2);
  Net b(8, 2);
  b->eval();
  const auto x = fixed_input(3);
  ASSERT_FALSE(torch::equal(a(x), b(x)));
  const auto report = lt::load_module_state(*b, load_map(dir / "w.safetensors"));
  EXPECT_TRUE(report.ok());
  EXPECT_TRUE(torch::equal(a(x), b(x)));
  expect_modules_bit_identical(*a, *b);
}

TEST(TorchModuleState, LoadTargetsAreWritableViews) {
  Net net(8, 1);
  auto targets = lt::module_targets(*net);
  auto& t = targets.at("embed.bias");
  const float value = 7.0f;
  std::memcpy(t.mutable_bytes().data(), &value, sizeof value);
  EXPECT_EQ(net->embed->bias[0].item<float>(), 7.0f);
}

TEST(TorchModuleState, StrictLoadIntoWrongShapeListsEveryMismatch) {
  Net small(8, 1);
  Net other(12, 2);
  auto state = lt::module_state(*small, ckptio::SnapshotMode::Copy);
  // One dtype mismatch on top of the shape differences, and one unexpected key.
  state["head.bias"] = lt::from_torch(small->head->bias.to(torch::kDouble), ckptio::SnapshotMode::Copy);
  state["extra.weight"] = ckptio::Tensor::zeros(ckptio::DType::F32, {2});
  const auto before = lt::module_state(*other, ckptio::SnapshotMode::Copy);

  const ckptio::MismatchReport expected = lt::compare_module_state(*other, state);
  // layer 1 is missing entirely; every shared tensor except head.bias and the scalar
  // num_batches_tracked has a dimension of 8 vs 12.
  const size_t layer1 = other->layers[1]->named_parameters().size() +
                        other->layers[1]->named_buffers().size();
  EXPECT_EQ(expected.missing.size(), layer1);
  EXPECT_EQ(expected.unexpected, std::vector<std::string>{"extra.weight"});
  // The shape differences plus head.bias, whose dtype differs.
  EXPECT_EQ(expected.mismatched.size(), state.size() - 1 /*extra*/ - 1 /*num_batches*/);
  try {
    (void)lt::load_module_state(*other, state);
    FAIL() << "strict load into a wrong-shaped model succeeded";
  } catch (const ckptio::Error& e) {
    EXPECT_EQ(e.code(), ckptio::ErrorCode::Mismatch);
    const std::string msg = e.message();
    EXPECT_NE(msg.find(std::to_string(expected.count()) + " mismatches"), std::string::npos) << msg;
    for (const auto& name : expected.missing) EXPECT_NE(msg.find("missing: " + name), std::string::npos) << name;
    EXPECT_NE(msg.find("unexpected: extra.weight"), std::string::npos);
    EXPECT_NE(msg.find("mismatched: embed.weight: checkpoint F32 [8, 4], model F32 [12, 4]"),
              std::string::npos) << msg;
    EXPECT_NE(msg.find("mismatched: head.bias: checkpoint F64 ["), std::string::npos) << msg;
  }
  // Nothing was written into the model.
  const auto after = lt::module_state(*other, ckptio::SnapshotMode::Copy);
  for (const auto& [name, t] : before) {
    EXPECT_TRUE(std::equal(t.bytes().begin(), t.bytes().end(), after.at(name).bytes().begin(),
                           after.at(name).bytes().end())) << name;
  }
  // Non-strict loads what matches (head.bias, converted from F64) and reports the rest.
  const auto report = lt::load_module_state(*other, state, /*strict=*/false);
  EXPECT_EQ(report.count(), expected.count());
  EXPECT_TRUE(torch::equal(other->head->bias, small->head->bias));
}

// Two identical models and optimizers; `make` builds an optimizer with two param groups.
template <typename MakeOptimizer>
void optimizer_round_trip(MakeOptimizer make) {
  TempDir dir;
  torch::manual_seed(5);
  Net a(8, 1);
  Net b(8, 1);
  (void)lt::load_module_state(*b, lt::module_state(*a, ckptio::SnapshotMode::Copy));
  auto opt_a = make(a);
  auto opt_b = make(b);
  const auto x = fixed_input(6);
  auto train = [&x](Net& net, torch::optim::Optimizer& opt, int steps) {
    for (int i = 0; i < steps; ++i) {
      opt.zero_grad();
      net(x).pow(2).mean().backward();
      opt.step();
    }
  };
  train(a, *opt_a, 3);
  const ckptio::OptimizerState saved = lt::optimizer_state(*opt_a, ckptio::SnapshotMode::Copy);
  ASSERT_FALSE(saved.tensors.empty());
  // b's weights follow a's; its optimizer only gets a's state through the files.
  (void)lt::load_module_state(*b, lt::module_state(*a, ckptio::SnapshotMode::Copy));
  lt::load_optimizer_state(*opt_b, through_files(dir, saved));
  const auto restored = lt::optimizer_state(*opt_b, ckptio::SnapshotMode::Copy);
  EXPECT_EQ(json::parse(restored.meta), json::parse(saved.meta));
  ASSERT_EQ(restored.tensors.size(), saved.tensors.size());
  for (const auto& [param, tensors] : saved.tensors) {
    for (const auto& [key, t] : tensors) {
      const auto& u = restored.tensors.at(param).at(key);
      EXPECT_TRUE(std::equal(t.bytes().begin(), t.bytes().end(), u.bytes().begin(), u.bytes().end()))
          << param << "." << key;
    }
  }
  // Continuing from the restored state is bit-identical to continuing the original.
  train(a, *opt_a, 2);
  train(b, *opt_b, 2);
  expect_modules_bit_identical(*a, *b);
}

std::vector<torch::optim::OptimizerParamGroup> two_groups(Net& net, auto options_first,
                                                          auto options_second) {
  std::vector<torch::Tensor> head, rest;
  for (const auto& item : net->named_parameters()) {
    (item.key().rfind("head.", 0) == 0 ? head : rest).push_back(item.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(rest, std::make_unique<decltype(options_first)>(options_first));
  groups.emplace_back(head, std::make_unique<decltype(options_second)>(options_second));
  return groups;
}

TEST(TorchOptimizer, SgdMomentumRoundTrip) {
  optimizer_round_trip([](Net& net) {
    return std::make_unique<torch::optim::SGD>(
        two_groups(net, torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true),
                   torch::optim::SGDOptions(0.01).momentum(0.5).dampening(0.1).weight_decay(1e-3)),
        torch::optim::SGDOptions(0.1));
  });
}

TEST(TorchOptimizer, AdamAmsgradRoundTrip) {
  optimizer_round_trip([](Net& net) {
    return std::make_unique<torch::optim::Adam>(
        two_groups(net, torch::optim::AdamOptions(1e-3).amsgrad(true),
                   torch::optim::AdamOptions(3e-3).betas({0.8, 0.99}).eps(1e-6)),
        torch::optim::AdamOptions(1e-3));
  });
}

TEST(TorchOptimizer, AdamWRoundTrip) {
  optimizer_round_trip([](Net& net) {
    return std::make_unique<torch::optim::AdamW>(
        two_groups(net, torch::optim::AdamWOptions(1e-3).weight_decay(0.05),
                   torch::optim::AdamWOptions(2e-3)),
        torch::optim::AdamWOptions(1e-3));
  });
}

TEST(TorchOptimizer, KeysFollowPythonAndMismatchesAreListed) {
  Net net(8, 1);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-3));
  opt.zero_grad();
  net(fixed_input(1)).sum().backward();
  opt.step();
  const auto state = lt::optimizer_state(opt, ckptio::SnapshotMode::Borrow);
  const size_t n = net->parameters().size();
  EXPECT_EQ(state.tensors.size(), n);
  const json meta = json::parse(state.meta);
  EXPECT_EQ(meta["param_groups"][0]["params"].size(), n);
  EXPECT_EQ(meta["state"]["0"]["step"], 1);
  EXPECT_EQ(meta["type"], "AdamW");
  // Parameter 0 is embed.weight (registration order, like Python's net.parameters()).
  EXPECT_EQ(state.tensors.at("0").at("exp_avg").shape(), (ckptio::Shape{8, 4}));
  EXPECT_EQ(state.tensors.at("0").size(), 2u);  // exp_avg, exp_avg_sq (no amsgrad)

  // A different model: wrong shapes everywhere, plus a type mismatch on another optimizer.
  Net other(12, 1);
  torch::optim::AdamW other_opt(other->parameters(), torch::optim::AdamWOptions(1e-3));
  try {
    lt::load_optimizer_state(other_opt, state);
    FAIL() << "loaded AdamW state of another model";
  } catch (const ckptio::Error& e) {
    EXPECT_EQ(e.code(), ckptio::ErrorCode::Mismatch);
    EXPECT_NE(e.message().find("state.0.exp_avg: checkpoint shape [8, 4], parameter [12, 4]"),
              std::string::npos) << e.message();
  }
  EXPECT_TRUE(other_opt.state().empty());
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  EXPECT_THROW(lt::load_optimizer_state(sgd, state), ckptio::Error);
}

TEST(TorchOptimizer, MatchesPythonAdamW) {
  if (!ckptio::testing::python_has_torch()) GTEST_SKIP() << "no PyTorch in /usr/bin/python3";
  TempDir dir;
  torch::manual_seed(9);
  Net net(8, 1);
  net->eval();
  save_map(dir / "init.safetensors", lt::module_state(*net, ckptio::SnapshotMode::Borrow));
  save_map(dir / "x.safetensors", {{"x", lt::from_torch(fixed_input(4), ckptio::SnapshotMode::Copy)}});
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    net(fixed_input(4)).pow(2).mean().backward();
    opt.step();
  }
  const std::string script = std::string(kPythonNet) + R"PY(
d = sys.argv[1]
net = Net(8, 1)
net.load_state_dict(load_st(d + "/init.safetensors"))
net.eval()
x = load_st(d + "/x.safetensors")["x"]
opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
for _ in range(3):
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    opt.step()
sd = opt.state_dict()
flat = {}
for idx, st in sd["state"].items():
    for k, v in st.items():
        if k != "step":
            flat["state.%d.%s" % (idx, k)] = v
save_st(d + "/py_state.safetensors", flat)
json.dump({"steps": {str(i): float(st["step"]) for i, st in sd["state"].items()},
           "params": sd["param_groups"][0]["params"]}, open(d + "/py_meta.json", "w"))
)PY";
  ASSERT_EQ(ckptio::testing::run_python(dir.path(), script, dir.path().string()), 0);
  const auto ours = lt::optimizer_state(opt, ckptio::SnapshotMode::Copy);
  const auto python = load_map(dir / "py_state.safetensors");
  const json meta = json::parse(ckptio::testing::read_file(dir / "py_meta.json"));
  const json ours_meta = json::parse(ours.meta);
  EXPECT_EQ(meta["params"], ours_meta["param_groups"][0]["params"]);
  size_t compared = 0;
  for (const auto& [name, t] : python) {
    const auto first = name.find('.'), second = name.find('.', first + 1);
    const std::string param = name.substr(first + 1, second - first - 1);
    const auto& mine = ours.tensors.at(param).at(name.substr(second + 1));
    EXPECT_TRUE(torch::allclose(lt::to_torch(mine), lt::to_torch(t), 1e-5, 1e-7)) << name;
    EXPECT_EQ(ours_meta["state"][param]["step"].get<double>(), meta["steps"][param].get<double>());
    ++compared;
  }
  EXPECT_EQ(compared, 2 * net->parameters().size());
}

TEST(TorchScheduler, WarmupCosineFollowsFormulaAndResumes) {
  Net net(8, 1);
  torch::optim::AdamW opt_a(net->parameters(), torch::optim::AdamWOptions(1.0));
  lt::WarmupCosineLR a(opt_a, {4, 20, 0.1});
  auto lr = [](torch::optim::Optimizer& o) { return o.param_groups()[0].options().get_lr(); };
  EXPECT_DOUBLE_EQ(lr(opt_a), 1.0 / 5.0);  // step 0 of warmup
  std::vector<double> seen{lr(opt_a)};
  for (int i = 0; i < 9; ++i) {
    a.step();
    seen.push_back(lr(opt_a));
  }
  EXPECT_DOUBLE_EQ(seen[3], 4.0 / 5.0);
  EXPECT_DOUBLE_EQ(seen[4], 1.0);  // end of warmup = peak
  EXPECT_DOUBLE_EQ(seen[9], 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 5.0 / 16.0)));
  const std::string state = a.state();
  EXPECT_EQ(json::parse(state)["last_epoch"], 9);

  torch::optim::AdamW opt_b(net->parameters(), torch::optim::AdamWOptions(123.0));
  lt::WarmupCosineLR b(opt_b, {1, 2, 0.0});
  b.load_state(state);
  EXPECT_EQ(lr(opt_b), lr(opt_a));
  for (int i = 0; i < 20; ++i) {
    a.step();
    b.step();
    ASSERT_EQ(lr(opt_a), lr(opt_b)) << i;
  }
  EXPECT_DOUBLE_EQ(lr(opt_a), 0.1);  // past total_steps: min_lr
  lt::StepLR wrong(opt_b, 3);
  EXPECT_THROW(wrong.load_state(state), ckptio::Error);
}

TEST(TorchScheduler, StepLrStateRoundTrip) {
  Net net(8, 1);
  torch::optim::SGD opt_a(net->parameters(), torch::optim::SGDOptions(1.0));
  torch::optim::SGD opt_b(net->parameters(), torch::optim::SGDOptions(1.0));
  lt::StepLR a(opt_a, 3, 0.5);
  for (int i = 0; i < 5; ++i) a.step();
  lt::StepLR b(opt_b, 3, 0.5);
  b.load_state(a.state());
  lt::load_optimizer_state(opt_b, lt::optimizer_state(opt_a, ckptio::SnapshotMode::Copy));
  for (int i = 0; i < 7; ++i) {
    a.step();
    b.step();
    ASSERT_EQ(opt_a.param_groups()[0].options().get_lr(), opt_b.param_groups()[0].options().get_lr());
  }
  EXPECT_LT(opt_a.param_groups()[0].options().get_lr(), 0.2);
  lt::StepLR other(opt_b, 4, 0.5);
  EXPECT_THROW(other.load_state(a.state()), ckptio::Error);
}

TEST(TorchEma, UpdateIsOpenSoraFormulaAndStateRoundTrips) {
  TempDir dir;
  torch::manual_seed(3);
  Net net(8, 1);
  lt::Ema ema(*net);
  const at::Tensor before = net->head->weight.detach().clone();
  {
    torch::NoGradGuard no_grad;
    net->head->weight.add_(1.0);
    net->bn->running_mean.fill_(0.5);
  }
  ema.update(*net, 0.9);
  const at::Tensor expected = before.mul(0.9).add(net->head->weight.detach(), 0.1);
  EXPECT_TRUE(bytes_equal(ema.tensors().at("head.weight"), expected));
  EXPECT_TRUE(torch::equal(ema.tensors().at("bn.running_mean"), net->bn->running_mean));

  save_map(dir / "ema.safetensors", ema.state(ckptio::SnapshotMode::Borrow));
  Net fresh(8, 1);
  lt::Ema restored(*fresh);
  EXPECT_TRUE(restored.load_state(load_map(dir / "ema.safetensors")).ok());
  EXPECT_TRUE(bytes_equal(restored.tensors().at("head.weight"), expected));
  restored.copy_to(*fresh);
  EXPECT_TRUE(bytes_equal(fresh->head->weight, expected));

  Net wrong(12, 1);
  EXPECT_THROW(ema.update(*wrong, 0.9), ckptio::Error);
}

TEST(TorchInterop, PythonAndLibtorchLoadEachOthersWeights) {
  if (!ckptio::testing::python_has_torch()) GTEST_SKIP() << "no PyTorch in /usr/bin/python3";
  TempDir dir;
  save_map(dir / "x.safetensors", {{"x", lt::from_torch(fixed_input(8), ckptio::SnapshotMode::Copy)}});
  torch::manual_seed(21);
  Net ours(16, 2);
  ours->eval();
  save_map(dir / "cpp.safetensors", lt::module_state(*ours, ckptio::SnapshotMode::Borrow));
  const std::string script = std::string(kPythonNet) + R"PY(
d = sys.argv[1]
torch.manual_seed(1234)
x = load_st(d + "/x.safetensors")["x"]
py = Net(16, 2)
py.train()
py(x)  # update BatchNorm statistics so the buffers are not their defaults
py.eval()
with torch.no_grad():
    save_st(d + "/py.safetensors", py.state_dict())
    save_st(d + "/py_out.safetensors", {"y": py(x)})
    cpp = Net(16, 2)
    cpp.load_state_dict(load_st(d + "/cpp.safetensors"), strict=True)
    cpp.eval()
    save_st(d + "/cpp_out_by_python.safetensors", {"y": cpp(x)})
)PY";
  ASSERT_EQ(ckptio::testing::run_python(dir.path(), script, dir.path().string()), 0);
  const at::Tensor x = fixed_input(8);
  torch::NoGradGuard no_grad;
  // Python's weights in libtorch give Python's outputs.
  Net from_python(16, 2);
  (void)lt::load_module_state(*from_python, load_map(dir / "py.safetensors"));
  from_python->eval();
  const at::Tensor py_out = lt::to_torch(load_map(dir / "py_out.safetensors").at("y"));
  EXPECT_TRUE(torch::allclose(from_python(x), py_out, 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(ours(x), py_out, 1e-5, 1e-6));
  // libtorch's weights in Python give libtorch's outputs.
  const at::Tensor cpp_out = lt::to_torch(load_map(dir / "cpp_out_by_python.safetensors").at("y"));
  EXPECT_TRUE(torch::allclose(ours(x), cpp_out, 1e-5, 1e-6));
}

}  // namespace
