// Reading an Open-Sora / ColossalAI checkpoint folder through CheckpointIO's load. The folder is
// built at test time by /usr/bin/python3 (PyTorch) following Open-Sora v2's CheckpointIO.save:
// model/ sharded with a ColossalAI index (MB total_size, "model-00001.safetensors" names, written
// the way colossalai/utils/safetensors.py lays files out), ema.pt, optimizer/ with
// pytorch_optim.bin.index.json + pickled shards + pytorch_optim_group.bin, lr_scheduler and
// sampler pickles, running_states.json. Python also dumps the expected bytes and values.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kBuildOpenSoraFolder = R"PY(
import json, os, struct, sys
import torch

out = sys.argv[1]
ckpt = os.path.join(out, "exp", "epoch1-global_step60")
os.makedirs(os.path.join(ckpt, "model"))
os.makedirs(os.path.join(ckpt, "optimizer"))
expected = os.path.join(out, "expected")
os.makedirs(expected)

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
ema = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
for _ in range(2):
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()

DT = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}

def write_safetensors(path, tensors):
    # colossalai/utils/safetensors.py prepare(): insertion order, "format": "pt", space padding.
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name, t in tensors.items():
        b = t.contiguous().numpy().tobytes() if t.dtype != torch.bfloat16 else \
            t.contiguous().view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)

sd = {k: v.detach() for k, v in model.state_dict().items()}
sd["extra.bf16"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).to(torch.bfloat16)
names = list(sd.keys())
shards = [names[:3], names[3:]]
weight_map = {}
total = 0
for i, part in enumerate(shards):
    fname = "model-%05d.safetensors" % (i + 1)
    write_safetensors(os.path.join(ckpt, "model", fname), {n: sd[n] for n in part})
    for n in part:
        weight_map[n] = fname
        total += sd[n].numel() * sd[n].element_size()
with open(os.path.join(ckpt, "model", "model.safetensors.index.json"), "w") as f:
    f.write(json.dumps({"metadata": {"total_size": total / 1024 / 1024}, "weight_map": weight_map},
                       indent=2) + "\n")

torch.save(ema.state_dict(), os.path.join(ckpt, "ema.pt"))

osd = opt.state_dict()
state = osd["state"]
ids = sorted(state.keys())
with open(os.path.join(ckpt, "optimizer", "pytorch_optim.bin.index.json"), "w") as f:
    wm = {}
    for i, part in enumerate([ids[:2], ids[2:]]):
        fname = "pytorch_optim-%05d.bin" % (i + 1)
        torch.save({k: state[k] for k in part}, os.path.join(ckpt, "optimizer", fname))
        for k in part:
            wm[str(k)] = fname
    f.write(json.dumps({"metadata": {"total_size": 0.01, "param_groups": "pytorch_optim_group.bin"},
                        "weight_map": wm}, indent=2) + "\n")
torch.save(osd["param_groups"], os.path.join(ckpt, "optimizer", "pytorch_optim_group.bin"))
torch.save(sched.state_dict(), os.path.join(ckpt, "lr_scheduler"))
torch.save({"seed": 42, "epoch": 1, "last_micro_batch_access_index": 80}, os.path.join(ckpt, "sampler"))
with open(os.path.join(ckpt, "running_states.json"), "w") as f:
    json.dump({"epoch": 1, "step": 20, "global_step": 120, "batch_size": 4,
               "actual_update_step": 60}, f, indent=4)

def dump(prefix, tensors):
    for n, t in tensors.items():
        t = t.detach().contiguous()
        b = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        with open(os.path.join(expected, prefix + "." + n + ".bin"), "wb") as f:
            f.write(b)

dump("model", sd)
dump("ema", ema.state_dict())
for pid, st in state.items():
    dump("optimizer", {"state.%d.%s" % (pid, k): v for k, v in st.items() if torch.is_tensor(v)})
with open(os.path.join(expected, "values.json"), "w") as f:
    sched_sd = sched.state_dict()
    json.dump({"param_groups": osd["param_groups"], "last_epoch": sched_sd["last_epoch"],
               "T_max": sched_sd["T_max"], "optimizer_keys": sorted("state.%d.%s" % (p, k)
               for p, st in state.items() for k in st)}, f)
)PY";

class OpenSoraFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
    ASSERT_EQ(testing::run_python(dir_.path(), kBuildOpenSoraFolder, dir_.path().string()), 0);
    exp_ = dir_ / "exp";
    ckpt_ = exp_ / "epoch1-global_step60";
    values_ = json::parse(testing::read_file(dir_ / "expected" / "values.json"));
  }
  void expect_bytes(const std::string& component, const std::string& name, const Tensor& t) {
    const std::string want =
        testing::read_file(dir_ / "expected" / (component + "." + name + ".bin"));
    ASSERT_EQ(want.size(), t.nbytes()) << component << ":" << name;
    EXPECT_EQ(0, std::memcmp(want.data(), t.bytes().data(), want.size())) << component << ":" << name;
  }

  testing::TempDir dir_;
  fs::path exp_, ckpt_;
  json values_;
};

TEST_F(OpenSoraFolder, LoadsEveryComponent) {
  CheckpointIO io(exp_);
  TensorMap model, ema;
  OptimizerState optimizer;
  std::string lr_text, sampler_text;
  const LoadResult r =
      io.load(ckpt_.string(), LoadTargets{&model, &ema, &optimizer, &lr_text, &sampler_text});
  const json lr = json::parse(lr_text), sampler = json::parse(sampler_text);
  EXPECT_EQ(r.running.epoch, 1);
  EXPECT_EQ(r.running.step, 20);
  EXPECT_EQ(r.running.global_step, 120);
  EXPECT_EQ(r.running.batch_size, 4);
  EXPECT_EQ(r.running.actual_update_step, 60);
  ASSERT_EQ(model.size(), 7u);
  for (const auto& [name, t] : model) expect_bytes("model", name, t);
  EXPECT_EQ(model.at("extra.bf16").dtype(), DType::BF16);
  ASSERT_EQ(ema.size(), 6u);
  for (const auto& [name, t] : ema) expect_bytes("ema", name, t);
  std::vector<std::string> keys;
  for (const auto& [param, m] : optimizer.tensors) {
    for (const auto& [key, t] : m) {
      keys.push_back("state." + param + "." + key);
      expect_bytes("optimizer", keys.back(), t);
    }
  }
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(json(keys), values_["optimizer_keys"]);
  EXPECT_EQ(json::parse(optimizer.meta)["param_groups"], values_["param_groups"]);
  EXPECT_EQ(lr["last_epoch"], values_["last_epoch"]);
  EXPECT_EQ(lr["T_max"], values_["T_max"]);
  EXPECT_EQ(sampler, (json{{"seed", 42}, {"epoch", 1}, {"last_micro_batch_access_index", 80}}));
}

TEST_F(OpenSoraFolder, LoadsIntoCallerBuffersStrictly) {
  TensorMap model;
  std::vector<float> weight(8 * 4, -1.0f);
  model["0.weight"] = Tensor::borrow(DType::F32, {8, 4}, std::as_writable_bytes(std::span(weight)));
  const LoadResult r =
      load_checkpoint_folder(ckpt_, LoadTargets{.model = &model}, CheckpointLoadOptions{.strict = false});
  expect_bytes("model", "0.weight", model["0.weight"]);
  EXPECT_EQ(r.unexpected.size(), 6u);
  EXPECT_THROW((void)load_checkpoint_folder(ckpt_, LoadTargets{.model = &model}), Error);
}

TEST_F(OpenSoraFolder, IsListedAsForeignVerifiesAndIsNotTakenForLatest) {
  const auto entries = list_checkpoints(exp_);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].state, CheckpointState::Foreign);
  EXPECT_EQ(entries[0].global_step, 60);
  EXPECT_FALSE(latest_checkpoint(exp_, {.warn = [](const std::string&) {}}).has_value());
  EXPECT_TRUE(is_checkpoint_folder(ckpt_));
  const VerifyReport v = verify_checkpoint(ckpt_, {.depth = VerifyDepth::Full});
  EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems[0]);
  EXPECT_FALSE(v.has_manifest);
  // A flipped bit in a pickle's tensor data is caught by its zip CRC.
  const fs::path ema = ckpt_ / "ema.pt";
  std::string bytes = testing::read_file(ema);
  const std::string weight = testing::read_file(dir_ / "expected" / "ema.0.weight.bin");
  const size_t at = bytes.find(weight);
  ASSERT_NE(at, std::string::npos);
  bytes[at + weight.size() / 2] = static_cast<char>(bytes[at + weight.size() / 2] ^ 0x01);
  testing::write_file(ema, bytes);
  const VerifyReport bad = verify_checkpoint(ckpt_, {.depth = VerifyDepth::Full});
  EXPECT_FALSE(bad.ok);
  ASSERT_FALSE(bad.problems.empty());
  EXPECT_NE(bad.problems[0].find("ema"), std::string::npos) << bad.problems[0];
}

}  // namespace
}  // namespace ckptio
