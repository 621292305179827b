// `ckptio inspect FILE.pt [--json]` and `ckptio convert` end to end, through the built binary.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ckptio/safetensors.h"
#include "format/torch/torch_fixtures.h"
#include "support/cli_run.h"

namespace ckptio::pt {
namespace {

namespace fs = std::filesystem;
using ckptio::testing::TempDir;

// Runs the CLI, its address space capped at 2 GiB (a file that makes it allocate without bound
// fails the test instead of exhausting the machine); returns the exit code (-1 when a signal ended
// it) and leaves stdout+stderr in `out`.
int ckptio_cli(const std::string& args, const fs::path&, std::string* out) {
  const ckptio::testing::CliResult r =
      ckptio::testing::run_ckptio_line(args, {}, uint64_t{2} << 30);
  *out = r.all();
  return r.exit_code;
}

#define CKPTIO_NEED_CLI()                                                        \
  if (!fs::exists(fs::path(CKPTIO_BIN_DIR) / "ckptio")) GTEST_SKIP() << "ckptio not built"

TEST(TorchCli, InspectShowsTreeAndTensors) {
  CKPTIO_NEED_TORCH_FIXTURES();
  CKPTIO_NEED_CLI();
  TempDir dir;
  std::string out;
  ASSERT_EQ(ckptio_cli("inspect " + (fixtures / "training.pt").string(), dir.path(), &out), 0) << out;
  EXPECT_NE(out.find("format: torch-zip"), std::string::npos) << out;
  EXPECT_NE(out.find("epoch: 3"), std::string::npos) << out;
  EXPECT_NE(out.find("exp_avg: tensor F32 [4, 3, 3, 3]"), std::string::npos) << out;
  EXPECT_NE(out.find("num_batches_tracked: tensor I64 []"), std::string::npos) << out;
  ASSERT_EQ(ckptio_cli("inspect --json " + (fixtures / "views.pt").string(), dir.path(), &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["tensors"].size(), 8u);
  EXPECT_EQ(j["storages"].size(), 3u);  // base (shared by 6 views), expanded, separate
}

TEST(TorchCli, InspectRefusesHostileFile) {
  CKPTIO_NEED_TORCH_FIXTURES();
  CKPTIO_NEED_CLI();
  TempDir dir;
  std::string out;
  EXPECT_EQ(ckptio_cli("inspect " + (fixtures / "evil_system.pt").string(), dir.path(), &out), 1);
  EXPECT_NE(out.find("ckptio: error: unsafe:"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(fixtures / "PWNED"));
}

// The README's promise: no input ends the process by a signal. These files are small but their
// shared objects would make a tree 200,000 levels high, 2^41 nodes, 3 GiB of bytes or 4 GB of
// tensor copies when walked at every place they appear.
TEST(TorchCli, FilesThatExpandThroughSharingFailWithTypedErrors) {
  CKPTIO_NEED_TORCH_FIXTURES();
  CKPTIO_NEED_CLI();
  TempDir dir;
  std::string out;
  const std::pair<const char*, const char*> cases[] = {
      {"inspect deep_memo_chains.pt", "ckptio: error: corrupt:"},
      {"inspect --json deep_memo_chains.pt", "ckptio: error: corrupt:"},
      {"inspect dict_bomb.pt", "ckptio: error: unsafe:"},
      {"inspect --json dict_bomb.pt", "ckptio: error: unsafe:"},
      {"inspect bytearray_bomb.pt", "ckptio: error: unsafe:"},
      {"inspect transposed_views.pt", "ckptio: error: unsafe:"},
  };
  for (const auto& [command, expected] : cases) {
    const std::string cmd(command);
    const size_t space = cmd.rfind(' ');
    const std::string args = cmd.substr(0, space + 1) + (fixtures / cmd.substr(space + 1)).string();
    EXPECT_EQ(ckptio_cli(args, dir.path(), &out), 1) << command << ": " << out;
    EXPECT_NE(out.find(expected), std::string::npos) << command << ": " << out;
  }
  const fs::path dst = dir / "views.safetensors";
  EXPECT_EQ(ckptio_cli("convert " + (fixtures / "transposed_views.pt").string() + " " + dst.string(),
                       dir.path(), &out),
            1)
      << out;
  EXPECT_NE(out.find("ckptio: error: unsafe:"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dst));
}

TEST(TorchCli, ConvertWithKeyAndDedupe) {
  CKPTIO_NEED_TORCH_FIXTURES();
  CKPTIO_NEED_CLI();
  TempDir dir;
  std::string out;
  const fs::path dst = dir / "model.safetensors";
  ASSERT_EQ(ckptio_cli("convert " + (fixtures / "training.pt").string() + " " + dst.string() +
                           " --key model --dedupe-shared",
                       dir.path(), &out),
            0)
      << out;
  EXPECT_NE(out.find("verified"), std::string::npos) << out;
  EXPECT_EQ(SafetensorsReader::open(dst).tensors().size(), 11u);
  EXPECT_EQ(ckptio_cli("convert " + (fixtures / "training.pt").string() + " " + (dir / "x").string() +
                           " --key nope",
                       dir.path(), &out),
            1);
  EXPECT_NE(out.find("not_found"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir / "x"));
}

}  // namespace
}  // namespace ckptio::pt
