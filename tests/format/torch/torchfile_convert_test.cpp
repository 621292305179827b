// .pt -> safetensors conversion: contents checked against PyTorch's manifest and, independently,
// by the system Python reading our output next to torch.load of the source.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "ckptio/torch_pickle.h"
#include "format/torch/torch_fixtures.h"
#include "io/write_backends.h"

namespace ckptio::pt {
namespace {

namespace fs = std::filesystem;
using ckptio::testing::TempDir;

TorchConvertOptions fast() {
  TorchConvertOptions o;
  o.sync = false;
  return o;
}

TEST(TorchConvert, WholeTrainingCheckpointMatchesPyTorch) {
  CKPTIO_NEED_TORCH_FIXTURES();
  TempDir dir;
  const auto report = convert_torch_to_safetensors(fixtures / "training.pt", dir / "out.safetensors", fast());
  const auto manifest = ckptio::testing::read_manifest(fixtures, "training");
  const std::string blob = ckptio::testing::read_file(fixtures / "training.bytes");
  const SafetensorsReader reader = SafetensorsReader::open(dir / "out.safetensors");
  size_t tensors = 0, values = 0;
  for (const auto& entry : manifest) {
    const std::string name = entry["name"];
    SCOPED_TRACE(name);
    if (entry["kind"] == "value") {
      ++values;
      ASSERT_TRUE(reader.metadata()->count(name));
      EXPECT_EQ(nlohmann::json::parse(reader.metadata()->at(name)), entry["json"]);
      continue;
    }
    ++tensors;
    const Tensor t = reader.tensor(name);
    EXPECT_EQ(dtype_name(t.dtype()), entry["dtype"].get<std::string>());
    EXPECT_EQ(t.shape(), entry["shape"].get<Shape>());
    ASSERT_EQ(t.nbytes(), entry["nbytes"].get<size_t>());
    EXPECT_EQ(std::memcmp(t.bytes().data(), blob.data() + entry["offset"].get<size_t>(), t.nbytes()), 0);
  }
  EXPECT_EQ(report.tensors_written, tensors);
  EXPECT_EQ(reader.tensors().size(), tensors);
  EXPECT_EQ(report.metadata_values, values);
  EXPECT_EQ(reader.metadata()->at("format"), "pt");
  EXPECT_EQ(reader.metadata()->at("epoch"), "3");
  EXPECT_EQ(reader.metadata()->at("name"), "\"run-7\"");
}

TEST(TorchConvert, KeySelectsASubtree) {
  CKPTIO_NEED_TORCH_FIXTURES();
  TempDir dir;
  TorchConvertOptions o = fast();
  o.key = "optimizer.state";
  convert_torch_to_safetensors(fixtures / "training.pt", dir / "opt.safetensors", o);
  const SafetensorsReader reader = SafetensorsReader::open(dir / "opt.safetensors");
  ASSERT_NE(reader.find("0.exp_avg"), nullptr);
  EXPECT_EQ(reader.find("model.0.weight"), nullptr);
  EXPECT_EQ(reader.tensors().size(), 24u);  // 8 params x (step, exp_avg, exp_avg_sq)
}

TEST(TorchConvert, SharedStoragesPerNameOrDeduplicated) {
  CKPTIO_NEED_TORCH_FIXTURES();
  TempDir dir;
  const auto plain = convert_torch_to_safetensors(fixtures / "views.pt", dir / "a.safetensors", fast());
  EXPECT_EQ(plain.tensors_written, 8u);
  EXPECT_EQ(plain.aliases, 0u);
  TorchConvertOptions o = fast();
  o.dedupe_shared = true;
  const auto deduped = convert_torch_to_safetensors(fixtures / "views.pt", dir / "b.safetensors", o);
  EXPECT_EQ(deduped.tensors_written, 7u);  // "alias" is the same view as "base"
  EXPECT_EQ(deduped.aliases, 1u);
  const SafetensorsReader reader = SafetensorsReader::open(dir / "b.safetensors");
  EXPECT_EQ(reader.find("alias"), nullptr);
  const auto aliases = nlohmann::json::parse(reader.metadata()->at(std::string(kAliasesMetadataKey)));
  EXPECT_EQ(aliases, nlohmann::json({{"alias", "base"}}));
  // Views of the same storage that are not the same view are still written in full.
  const Tensor t = reader.tensor("transposed");
  EXPECT_EQ(t.shape(), (Shape{6, 4}));
  float v[2];
  std::memcpy(v, t.bytes().data(), sizeof v);
  EXPECT_EQ(v[1], 6.0f);
}

TEST(TorchConvert, FailuresLeaveNoOutput) {
  CKPTIO_NEED_TORCH_FIXTURES();
  TempDir dir;
  TorchConvertOptions o = fast();
  o.key = "no.such.key";
  EXPECT_THROW(convert_torch_to_safetensors(fixtures / "training.pt", dir / "x.safetensors", o), Error);
  try {
    convert_torch_to_safetensors(fixtures / "evil_system.pt", dir / "y.safetensors", fast());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unsafe);
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
  EXPECT_FALSE(fs::exists(fixtures / "PWNED"));
}

// A durable conversion starts the disk's writeback of every byte it writes (the atomic write's
// fsync then has little left to wait for); one without fsync leaves the page cache alone.
TEST(TorchConvert, DurableConversionStartsWritebackOfEveryByte) {
  CKPTIO_NEED_TORCH_FIXTURES();
  for (bool sync : {true, false}) {
    TempDir dir;
    ckptio::testing::ObservingEnv observed(io::Env::posix());
    TorchConvertOptions o;
    o.sync = sync;
    o.load.env = &observed;
    convert_torch_to_safetensors(fixtures / "training.pt", dir / "out.safetensors", o);
    const uint64_t size = fs::file_size(dir / "out.safetensors");
    EXPECT_EQ(observed.writeback_started.load(), sync ? size : 0) << "sync " << sync;
  }
}

TEST(TorchConvert, PythonReadsOutputEqualToTorchLoad) {
  CKPTIO_NEED_TORCH_FIXTURES();
  TempDir dir;
  for (const char* name : {"model", "dtypes", "legacy", "views"}) {
    convert_torch_to_safetensors(fixtures / (std::string(name) + ".pt"),
                                 dir / (std::string(name) + ".safetensors"), fast());
  }
  // An independent reader: the header parsed with json, data with numpy, compared with torch.load.
  const std::string script = R"PY(
import json, struct, sys, torch
DT = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
      "U8": torch.uint8, "BOOL": torch.bool, "C64": torch.complex64}
def flat(o, n, out):
    if isinstance(o, dict) and o:
        for k, v in o.items(): flat(v, (n + "." if n else "") + str(k), out)
    elif isinstance(o, (list, tuple)) and o:
        for i, v in enumerate(o): flat(v, (n + "." if n else "") + str(i), out)
    elif isinstance(o, torch.Tensor): out[n] = o
fx, out = sys.argv[1], sys.argv[2]
for name in ["model", "dtypes", "legacy", "views"]:
    raw = open(f"{out}/{name}.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    want = {}
    flat(torch.load(f"{fx}/{name}.pt"), "", want)
    assert set(want) == set(header) - {"__metadata__"}, name
    for k, t in want.items():
        e = header[k]
        b, end = e["data_offsets"]
        flat_t = t.detach().contiguous().reshape(-1)
        if flat_t.dtype == torch.bfloat16:
            flat_t = flat_t.view(torch.int16)
        assert DT[e["dtype"]] == t.dtype and e["shape"] == list(t.shape), k
        assert raw[8 + n + b:8 + n + end] == flat_t.numpy().tobytes(), k
print("python verified")
)PY";
  EXPECT_EQ(ckptio::testing::run_python(dir.path(), script, fixtures.string() + " " + dir.path().string()), 0);
}

}  // namespace
}  // namespace ckptio::pt
