// Every documented SOURCE form means the same thing in every command: inspect, verify, convert
// and diff each accept a file (.safetensors, .pt), a sharded folder, a training checkpoint (ckptio's
// and Open-Sora's) and its CKPT/model, CKPT/ema, CKPT/optimizer, and hf://org/name[/path] (here
// from an offline Hub cache). A plain path that does not exist is not_found, never a Hub request.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "checkpoint/training_state_fixture.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/safetensors.h"
#include "support/cli_run.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::run_ckptio;
using testing::TempDir;

// Open-Sora v2's layout: ColossalAI-sharded model/, ema.pt, optimizer/ with pickled shards.
constexpr const char* kOpenSora = R"PY(
import json, os, struct, sys, torch
ckpt = sys.argv[1]
os.makedirs(os.path.join(ckpt, "model")); os.makedirs(os.path.join(ckpt, "optimizer"))
torch.manual_seed(0)
model = torch.nn.Linear(4, 3)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(torch.randn(2, 4)).sum().backward(); opt.step()
def st(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for n, t in tensors.items():
        b = t.contiguous().numpy().tobytes()
        header[n] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(header).encode(); h += b" " * ((8 - len(h) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
sd = {k: v.detach() for k, v in model.state_dict().items()}
st(os.path.join(ckpt, "model", "model-00001.safetensors"), {"weight": sd["weight"]})
st(os.path.join(ckpt, "model", "model-00002.safetensors"), {"bias": sd["bias"]})
open(os.path.join(ckpt, "model", "model.safetensors.index.json"), "w").write(json.dumps(
    {"metadata": {"total_size": 0.0001}, "weight_map": {"weight": "model-00001.safetensors", "bias": "model-00002.safetensors"}}))
torch.save({k: v * 2 for k, v in sd.items()}, os.path.join(ckpt, "ema.pt"))
osd = opt.state_dict()
torch.save({0: osd["state"][0]}, os.path.join(ckpt, "optimizer", "pytorch_optim-00001.bin"))
torch.save({1: osd["state"][1]}, os.path.join(ckpt, "optimizer", "pytorch_optim-00002.bin"))
open(os.path.join(ckpt, "optimizer", "pytorch_optim.bin.index.json"), "w").write(json.dumps(
    {"metadata": {"total_size": 0.01, "param_groups": "pytorch_optim_group.bin"},
     "weight_map": {"0": "pytorch_optim-00001.bin", "1": "pytorch_optim-00002.bin"}}))
torch.save(osd["param_groups"], os.path.join(ckpt, "optimizer", "pytorch_optim_group.bin"))
json.dump({"epoch": 1, "step": 2, "global_step": 2, "batch_size": 2, "actual_update_step": 2},
          open(os.path.join(ckpt, "running_states.json"), "w"))
)PY";

class CliSources : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::python_has_torch()) GTEST_SKIP() << "no torch in /usr/bin/python3";
    CheckpointOptions o;
    o.sync = false;
    CheckpointIO(dir_ / "exp", o).save(testing::make_training_state(10));
    ckpt_ = dir_ / "exp" / checkpoint_folder_name(testing::make_training_state(10).running.epoch, 10);
    ASSERT_TRUE(fs::is_directory(ckpt_));
    ASSERT_EQ(testing::run_python(dir_.path(), kOpenSora, opensora_.string()), 0);
    // An offline Hugging Face cache holding org/name at one commit.
    const std::string commit(40, 'a');
    const fs::path repo = hub_ / "models--org--name";
    fs::create_directories(repo / "refs");
    fs::create_directories(repo / "blobs");
    fs::create_directories(repo / "snapshots" / commit);
    testing::write_file(repo / "refs" / "main", commit);
    fs::copy_file(ckpt_ / "ema.safetensors", repo / "blobs" / "0123abcd");
    fs::create_symlink("../../blobs/0123abcd", repo / "snapshots" / commit / "model.safetensors");
  }

  std::vector<std::string> env() const {
    // Any network request would fail (port 9) and surface as io_error, not as success.
    return {"HF_HUB_CACHE=" + hub_.string(), "HF_HUB_OFFLINE=1", "HF_ENDPOINT=http://127.0.0.1:9"};
  }

  TempDir dir_;
  fs::path ckpt_;
  fs::path opensora_ = dir_ / "opensora" / "epoch1-global_step2";
  fs::path hub_ = dir_ / "hub";
};

TEST_F(CliSources, EveryFormWorksInEveryCommand) {
  ASSERT_TRUE(fs::exists(ckpt_ / "ema.safetensors"));
  ASSERT_FALSE(fs::exists(ckpt_ / "ema"));
  const std::vector<std::string> forms = {
      (ckpt_ / "ema.safetensors").string(),      // a safetensors file
      (opensora_ / "ema.pt").string(),           // a .pt file
      (opensora_ / "model").string(),            // a sharded (ColossalAI) folder
      ckpt_.string(),                            // a ckptio training checkpoint
      (ckpt_ / "model").string(),
      (ckpt_ / "ema").string(),                  // ema.safetensors named as a component
      (ckpt_ / "optimizer").string(),
      opensora_.string(),                        // an Open-Sora training checkpoint
      (opensora_ / "ema").string(),              // ema.pt named as a component
      (opensora_ / "optimizer").string(),        // ColossalAI's pickled optimizer shards
      "hf://org/name",
      "hf://org/name/model.safetensors",
  };
  int i = 0;
  for (const std::string& form : forms) {
    SCOPED_TRACE(form);
    const std::string out = (dir_ / ("out" + std::to_string(i++) + ".safetensors")).string();
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"inspect", form}, {"inspect", "--json", form},
                                               {"verify", form}, {"convert", form, out},
                                               {"diff", form, out}, {"diff", out, form}}) {
      const auto r = run_ckptio(args, env());
      EXPECT_EQ(r.exit_code, 0) << args[0] << " " << args.back() << "\n" << r.out << r.err;
    }
  }
}

TEST_F(CliSources, OptimizerComponentsReadAsStateTensors) {
  const auto r = run_ckptio({"inspect", (opensora_ / "optimizer").string()}, env());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("state.0.exp_avg"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("state.1.exp_avg_sq"), std::string::npos) << r.out;
}

TEST_F(CliSources, MissingPathsAreNotFoundWithoutTheHub) {
  const std::vector<std::string> missing = {"org/name", (dir_ / "absent.safetensors").string(),
                                            (opensora_ / "master").string()};
  const std::string good = (ckpt_ / "ema.safetensors").string();
  for (const std::string& m : missing) {
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"inspect", m}, {"verify", m}, {"convert", m, (dir_ / "x.safetensors").string()},
             {"diff", good, m}, {"diff", m, good}}) {
      const auto r = run_ckptio(args, env());
      EXPECT_EQ(r.exit_code, 1) << args[0] << " " << m;
      EXPECT_EQ(r.err.rfind("ckptio: error: not_found: ", 0), 0u) << args[0] << " " << m << ": " << r.err;
    }
  }
}

}  // namespace
}  // namespace ckptio
