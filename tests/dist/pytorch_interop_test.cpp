// Stock PyTorch reads what ckptio's distributed save writes: torch.distributed.checkpoint.load
// with HuggingFaceStorageReader, pointed at the checkpoint folder, fills a state dict with the
// full tensors. Runs the project's Python (.venv, with torch and safetensors); skipped without it.
#include <gtest/gtest.h>

#include <cstdlib>

#include "ckptio/dist.h"
#include "ckptio/safetensors.h"
#include "dist_helpers.h"
#include "support/test_util.h"

namespace ckptio::dist {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const fs::path kPython = fs::path(CKPTIO_SOURCE_DIR) / ".venv" / "bin" / "python";

bool python_has_dcp_hf_reader() {
  static const bool ok =
      fs::exists(kPython) &&
      std::system((kPython.string() +
                   " -c 'import safetensors, torch.distributed.checkpoint.hf_storage' >/dev/null 2>&1")
                      .c_str()) == 0;
  return ok;
}

constexpr const char* kScript = R"PY(
import sys
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader
from safetensors.torch import load_file

ckpt, expected_file = sys.argv[1], sys.argv[2]
expected = load_file(expected_file)
state = {name: torch.zeros_like(t) for name, t in expected.items()}
dcp.load(state, storage_reader=HuggingFaceStorageReader(ckpt))
# Bit patterns, not values: the test data holds NaNs.
bad = [n for n, t in expected.items() if not torch.equal(state[n].view(torch.uint8), t.view(torch.uint8))]
if bad:
    print("differ:", bad)
    sys.exit(1)
print("pytorch loaded", len(state), "tensors")
)PY";

TEST(DistPyTorch, StockHuggingFaceStorageReaderLoadsACheckpointCkptioWrote) {
  if (!python_has_dcp_hf_reader()) GTEST_SKIP() << "no " << kPython << " with torch and safetensors";
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  using testing::Layout;
  const std::vector<testing::Spec> specs{
      {"embed.weight", DType::F32, {12, 8}, Layout::Rows},
      {"attn.weight", DType::BF16, {8, 10}, Layout::Grid},
      {"optim.exp_avg", DType::F32, {7, 5}, Layout::Flat},  // padded ZeRO partitions
      {"blocks", DType::I32, {16, 3}, Layout::TwoRowBlocks},
      {"norm.bias", DType::F16, {8}, Layout::Replicated},
  };
  const auto errors = testing::save_on_ranks(4, dir, specs);
  for (const auto& e : errors) ASSERT_EQ(testing::error_message(e), "");

  std::vector<std::vector<std::byte>> full;
  std::vector<NamedTensor> expected;
  for (const auto& [name, dtype, shape, layout] : specs) {
    full.push_back(testing::global_bytes(name, dtype, shape));
    expected.push_back({name, TensorView{dtype, shape, full.back()}});
  }
  SafetensorsWriteOptions wo;
  wo.sync = false;
  save_safetensors(tmp / "expected.safetensors", expected, wo);

  ckptio::testing::write_file(tmp / "check.py", kScript);
  const std::string cmd = kPython.string() + " " + (tmp / "check.py").string() + " " +
                          dir.string() + " " + (tmp / "expected.safetensors").string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace
}  // namespace ckptio::dist
