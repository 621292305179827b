// `ckptio convert` as a user runs it: memory bounded by the largest tensor (not the input size),
// temp files of killed converts cleaned up, the input never silently replaced, torch keys that
// hold no tensor refused.
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "ckptio/safetensors.h"
#include "support/cli_run.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::run_ckptio;
using testing::TempDir;

constexpr uint64_t kTensorBytes = uint64_t{8} << 20;  // 8 MiB each
constexpr int kTensors = 16;                           // 128 MiB in all

// A safetensors file of kTensors F32 tensors of kTensorBytes each.
fs::path write_big_safetensors(const TempDir& dir) {
  std::vector<Tensor> tensors;
  std::vector<NamedTensor> named;
  for (int i = 0; i < kTensors; ++i) {
    tensors.push_back(Tensor::zeros(DType::F32, {kTensorBytes / 4}));
    float* f = reinterpret_cast<float*>(tensors.back().mutable_bytes().data());
    for (uint64_t k = 0; k < kTensorBytes / 4; k += 1024) f[k] = static_cast<float>(i + k);
    named.push_back({"layer" + std::to_string(i) + ".weight", tensors.back().view()});
  }
  SafetensorsWriteOptions o;
  o.sync = false;
  save_safetensors(dir / "big.safetensors", named, o);
  return dir / "big.safetensors";
}

long input_kib(const fs::path& p) { return static_cast<long>(fs::file_size(p) / 1024); }

// The CLI's environment for memory measurements: under ASan, no quarantine (it would keep every
// freed tensor buffer resident); elsewhere the variable is ignored.
std::vector<std::string> measuring_env() {
  const char* asan = std::getenv("ASAN_OPTIONS");
  return {std::string("ASAN_OPTIONS=") + (asan ? asan : "") + ":quarantine_size_mb=0"};
}

// Peak resident memory of a convert beyond what the same convert of a one-tensor file needs (the
// runtime's own, and the sanitizers' when they are on).
long convert_peak_beyond_baseline_kib(const std::vector<std::string>& args,
                                      const std::vector<std::string>& baseline_args,
                                      std::string* out) {
  const auto base = run_ckptio(baseline_args, measuring_env());
  const auto r = run_ckptio(args, measuring_env());
  *out = r.out + r.err;
  if (base.exit_code != 0 || r.exit_code != 0) return -1;
  return r.max_rss_kib - base.max_rss_kib;
}

fs::path write_small_safetensors(const TempDir& dir) {
  std::vector<float> w(1024, 1.0f);
  std::vector<NamedTensor> named = {{"w", TensorView{DType::F32, {1024}, std::as_bytes(std::span(w))}}};
  SafetensorsWriteOptions o;
  o.sync = false;
  save_safetensors(dir / "small.safetensors", named, o);
  return dir / "small.safetensors";
}

TEST(CliConvertMemory, SafetensorsPeakStaysBelowTheInputSize) {
  TempDir dir;
  const fs::path big = write_big_safetensors(dir);
  const fs::path small = write_small_safetensors(dir);
  std::string out;
  // Holding the state (or mapping and touching all of it) would need at least the input size.
  const long cast = convert_peak_beyond_baseline_kib(
      {"convert", big.string(), (dir / "out.safetensors").string(), "--dtype", "bf16"},
      {"convert", small.string(), (dir / "small-out.safetensors").string(), "--dtype", "bf16"}, &out);
  ASSERT_GE(cast, -1024) << out;
  EXPECT_LT(cast, input_kib(big) / 2) << "peak beyond baseline " << cast << " KiB";
  const long same = convert_peak_beyond_baseline_kib(
      {"convert", big.string(), (dir / "same.safetensors").string()},
      {"convert", small.string(), (dir / "small-same.safetensors").string()}, &out);
  ASSERT_GE(same, -1024) << out;
  EXPECT_NE(out.find("read back and compared: 16 tensors equal"), std::string::npos) << out;
  EXPECT_LT(same, input_kib(big) / 2) << "peak beyond baseline " << same << " KiB";
}

TEST(CliConvertMemory, TorchPeakStaysBelowTheInputSize) {
  if (!testing::python_has_torch()) GTEST_SKIP() << "no torch in /usr/bin/python3";
  TempDir dir;
  const fs::path pt = dir / "big.pt";
  ASSERT_EQ(testing::run_python(dir.path(),
                                "import sys, torch\n"
                                "torch.save({f'layer{i}.weight': torch.full((2*1024*1024,), float(i))"
                                " for i in range(16)}, sys.argv[1])\n"
                                "torch.save({'w': torch.ones(1024)}, sys.argv[2])\n",
                                pt.string() + " " + (dir / "small.pt").string()),
            0);
  std::string out;
  const long peak = convert_peak_beyond_baseline_kib(
      {"convert", pt.string(), (dir / "out.safetensors").string()},
      {"convert", (dir / "small.pt").string(), (dir / "small-out.safetensors").string()}, &out);
  ASSERT_GE(peak, -1024) << out;
  EXPECT_NE(out.find("read back and compared: 16 tensors equal"), std::string::npos) << out;
  EXPECT_LT(peak, input_kib(pt) / 2) << "peak beyond baseline " << peak << " KiB";
}

// A pid that belonged to a process that has exited.
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

TEST(CliConvertTempFiles, StaleTempFilesOfTheSameOutputAreRemovedOthersKept) {
  TempDir dir;
  const fs::path src = dir / "in.safetensors";
  const float v[2] = {1, 2};
  SafetensorsWriteOptions o;
  o.sync = false;
  save_safetensors(src, {{{"w", {DType::F32, {2}, std::as_bytes(std::span(v))}}}}, o);
  const std::string dead = std::to_string(dead_pid());
  const std::string live = std::to_string(::getpid());
  // What a convert killed mid-write leaves, and files that must survive.
  const fs::path stale = dir / (".out.safetensors.tmp-convert-" + dead + "-a1b2");
  const fs::path running = dir / (".out.safetensors.tmp-convert-" + live + "-c3d4");
  const fs::path locked = dir / (".out.safetensors.tmp-convert-" + dead + "-e5f6");
  const fs::path other_target = dir / (".other.safetensors.tmp-convert-" + dead + "-a1b2");
  const fs::path other_writer = dir / (".out.safetensors.tmp-a1b2c3");  // write_file_atomic's
  for (const auto& p : {stale, running, locked, other_target, other_writer}) {
    testing::write_file(p, std::string(4096, 'x'));
  }
  const int lock_fd = ::open(locked.c_str(), O_RDONLY);
  ASSERT_GE(lock_fd, 0);
  ASSERT_EQ(::flock(lock_fd, LOCK_EX), 0);  // a live writer whose pid we cannot see
  const auto r = run_ckptio({"convert", src.string(), (dir / "out.safetensors").string()});
  ::close(lock_fd);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_NE(r.out.find(stale.filename().string()), std::string::npos) << r.out;
  for (const auto& p : {running, locked, other_target, other_writer}) EXPECT_TRUE(fs::exists(p)) << p;
  // The new convert leaves no temp file of its own.
  size_t temps = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    temps += e.path().filename().string().starts_with(".out.safetensors.tmp-convert-") ? 1 : 0;
  }
  EXPECT_EQ(temps, 2u);  // running + locked
}

TEST(CliConvertInPlace, OutputEqualToInputIsRefusedUnlessInPlace) {
  TempDir dir;
  const fs::path src = dir / "in.safetensors";
  const float v[2] = {1.5f, 2};
  SafetensorsWriteOptions o;
  o.sync = false;
  save_safetensors(src, {{{"w", {DType::F32, {2}, std::as_bytes(std::span(v))}}}}, o);
  const std::string before = testing::read_file(src);
  fs::create_hard_link(src, dir / "link.safetensors");
  for (const fs::path& dst : {src, dir / "link.safetensors", dir / "." / "in.safetensors"}) {
    const auto r = run_ckptio({"convert", src.string(), dst.string(), "--dtype", "bf16"});
    EXPECT_EQ(r.exit_code, 1) << dst;
    EXPECT_NE(r.err.find("invalid_argument"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--in-place"), std::string::npos) << r.err;
    EXPECT_EQ(testing::read_file(src), before) << dst;
  }
  const auto r = run_ckptio({"convert", src.string(), src.string(), "--dtype", "bf16", "--in-place"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(SafetensorsReader::open(src).info("w").dtype, DType::BF16);
}

TEST(CliConvertTorchKeys, NonTensorKeyRefusedBareTensorNamedByKey) {
  if (!testing::python_has_torch()) GTEST_SKIP() << "no torch in /usr/bin/python3";
  TempDir dir;
  const fs::path pt = dir / "ckpt.pt";
  ASSERT_EQ(testing::run_python(dir.path(),
                                "import sys, torch\n"
                                "torch.save({'epoch': 3, 'model': {'w': torch.ones(2), 'b': torch.zeros(1)}},"
                                " sys.argv[1])\n",
                                pt.string()),
            0);
  const fs::path out = dir / "out.safetensors";
  auto r = run_ckptio({"convert", pt.string(), out.string(), "--key", "epoch"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("invalid_argument"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("epoch"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  r = run_ckptio({"convert", pt.string(), out.string(), "--key", "epoch", "--dedupe-shared"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("invalid_argument"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  r = run_ckptio({"convert", pt.string(), out.string(), "--key", "model.w"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto reader = SafetensorsReader::open(out);
  ASSERT_EQ(reader.tensors().size(), 1u);
  EXPECT_EQ(reader.tensors()[0].name, "model.w");
  // The whole file: tensors by dotted name, the other values in the metadata.
  r = run_ckptio({"convert", pt.string(), (dir / "all.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto all = SafetensorsReader::open(dir / "all.safetensors");
  EXPECT_EQ(all.tensors().size(), 2u);
  EXPECT_EQ(all.metadata()->at("epoch"), "3");
}

// verify of a .pt checks every record's CRC-32; convert (which checks them one buffer at a time)
// refuses the file too and publishes nothing.
TEST(CliTorchRecords, FlippedBitIsCorruptForVerifyAndConvert) {
  if (!testing::python_has_torch()) GTEST_SKIP() << "no torch in /usr/bin/python3";
  TempDir dir;
  const fs::path pt = dir / "w.pt";
  ASSERT_EQ(testing::run_python(dir.path(),
                                "import sys, torch\n"
                                "torch.save({'w': torch.arange(65536, dtype=torch.float32)}, sys.argv[1])\n",
                                pt.string()),
            0);
  EXPECT_EQ(run_ckptio({"verify", pt.string()}).exit_code, 0);
  std::string bytes = testing::read_file(pt);
  bytes[bytes.size() / 2] ^= 0x10;  // inside the 256 KiB tensor record
  testing::write_file(pt, bytes);
  const auto v = run_ckptio({"verify", pt.string()});
  EXPECT_EQ(v.exit_code, 1);
  EXPECT_EQ(v.err.rfind("ckptio: error: corrupt: ", 0), 0u) << v.err;
  const auto c = run_ckptio({"convert", pt.string(), (dir / "out.safetensors").string()});
  EXPECT_EQ(c.exit_code, 1);
  EXPECT_EQ(c.err.rfind("ckptio: error: corrupt: ", 0), 0u) << c.err;
  EXPECT_FALSE(fs::exists(dir / "out.safetensors"));
}

}  // namespace
}  // namespace ckptio
