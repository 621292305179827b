// load_checkpoint, convert_checkpoint and diff_checkpoints on every kind of source, with files
// made by PyTorch (through /usr/bin/python3) and by ckptio.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "ckptio/error.h"
#include "ckptio/load.h"
#include "ckptio/safetensors.h"
#include "ckptio/sharded.h"
#include "format/sharded/python_fixtures.h"
#include "support/expect_error.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

using testing::expect_error;

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

// What PyTorch had in memory: name -> (dtype, shape, raw bytes).
struct Expected {
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    std::string bytes;
  };
  std::vector<Entry> entries;
  const Entry& at(const std::string& name) const {
    for (const auto& e : entries) {
      if (e.name == name) return e;
    }
    throw std::runtime_error("no expected " + name);
  }
};

Expected read_expected(const fs::path& dir) {
  Expected e;
  const auto j = nlohmann::json::parse(testing::read_file(dir / "listing.json"));
  for (size_t i = 0; i < j.size(); ++i) {
    e.entries.push_back({j[i][0].get<std::string>(), *parse_dtype(j[i][1].get<std::string>()),
                         j[i][2].get<Shape>(), testing::read_file(dir / (std::to_string(i) + ".raw"))});
  }
  return e;
}

// Caller-owned buffers shaped like the expected tensors (optionally with another float dtype).
struct Buffers {
  std::vector<std::vector<std::byte>> storage;
  std::vector<LoadTarget> targets;
  explicit Buffers(const Expected& e, std::optional<DType> float_as = std::nullopt, std::string prefix = "") {
    storage.reserve(e.entries.size());
    for (const auto& x : e.entries) {
      DType dt = x.dtype;
      if (float_as && dtype_is_float(dt)) dt = *float_as;
      storage.emplace_back(tensor_nbytes(dt, x.shape), std::byte{0xAB});
      targets.push_back({prefix + x.name, dt, x.shape, storage.back()});
    }
  }
  std::string bytes(size_t i) const { return {reinterpret_cast<const char*>(storage[i].data()), storage[i].size()}; }
};

// One Python run (PyTorch starts slowly) makes every source the suite loads.
class LoadPython : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing::python_has_torch()) return;
    const std::string code = R"PY(
d = sys.argv[1]
sd = model_state()
dump_expected(d + '/exp', sd)
write_safetensors(d + '/model.safetensors', sd, {"format": "pt", "origin": "python"})
write_safetensors(d + '/nometa.safetensors', sd, None)
torch.save(sd, d + '/model.pt')
torch.save(sd, d + '/weights.bin')
torch.save({"model": sd, "epoch": 3}, d + '/train.pth')
torch.save(sd, d + '/noext')
save_hf(d + '/hf', sd, 10000)
save_bin_sharded(d + '/binfolder', sd, 10000)
save_hf(d + '/binfolder_expected', sd, 10000)
os.makedirs(d + '/single', exist_ok=True)
write_safetensors(d + '/single/model.safetensors', sd)
# Open-Sora / ColossalAI training checkpoint: model/ (ColossalAI index), ema.pt, running_states.
ck = d + '/epoch1-global_step100'
save_colossal(ck + '/model', sd, 0.01)
ema = {k: (v * 2 if v.is_floating_point() else v) for k, v in sd.items()}
torch.save(ema, ck + '/ema.pt')
dump_expected(d + '/ema_exp', ema)
json.dump({"epoch": 1, "step": 5, "global_step": 100}, open(ck + '/running_states.json', 'w'))
# Mixed folder: broken safetensors next to a valid pickle.
os.makedirs(d + '/mixed', exist_ok=True)
open(d + '/mixed/model.safetensors', 'wb').write(b'\x10\x00\x00\x00\x00\x00\x00\x00{"broken":')
torch.save(sd, d + '/mixed/pytorch_model.bin')
os.makedirs(d + '/pickle_only', exist_ok=True)
torch.save(sd, d + '/pickle_only/pytorch_model.bin')
)PY";
    const auto dir = testing::cached_python_fixture("load", testing::kShardFixturePython + code);
    ok_ = dir.has_value();
    if (ok_) {
      dir_ = new fs::path(*dir);
      expected_ = new Expected(read_expected(*dir_ / "exp"));
    }
  }
  static void TearDownTestSuite() {
    delete expected_;
    delete dir_;
    expected_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!testing::python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
    ASSERT_TRUE(ok_) << "fixture script failed";
  }
  fs::path p(const std::string& name) const { return *dir_ / name; }
  const Expected& expected() const { return *expected_; }

  void expect_loads_into_buffers(const fs::path& source, const Expected& e, LoadOptions options = {}) {
    Buffers buffers(e);
    const LoadReport report = load_checkpoint(source, buffers.targets, options);
    EXPECT_TRUE(report.ok()) << report.summary();
    EXPECT_EQ(report.loaded.size(), e.entries.size());
    uint64_t total = 0;
    for (size_t i = 0; i < e.entries.size(); ++i) {
      EXPECT_TRUE(buffers.bytes(i) == e.entries[i].bytes) << source << " " << e.entries[i].name;
      total += e.entries[i].bytes.size();
    }
    EXPECT_EQ(report.bytes_read, total);
  }

  static inline fs::path* dir_ = nullptr;
  static inline bool ok_ = false;
  static inline Expected* expected_ = nullptr;
};

TEST_F(LoadPython, EveryKindOfSourceIntoCallerBuffers) {
  for (const char* name : {"model.safetensors", "model.pt", "weights.bin", "noext", "hf",
                           "hf/model.safetensors.index.json", "binfolder", "single"}) {
    SCOPED_TRACE(name);
    expect_loads_into_buffers(p(name), expected());
  }
  LoadOptions o;
  o.source.torch_key = "model";
  expect_loads_into_buffers(p("train.pth"), expected(), o);
}

TEST_F(LoadPython, ResolvesWhatItPicked) {
  EXPECT_EQ(resolve_checkpoint_source(p("hf")).kind, SourceKind::ShardedFolder);
  EXPECT_EQ(resolve_checkpoint_source(p("single")).path, p("single") / "model.safetensors");
  EXPECT_EQ(resolve_checkpoint_source(p("binfolder")).path, p("binfolder") / "pytorch_model.bin.index.json");
  EXPECT_EQ(resolve_checkpoint_source(p("noext")).kind, SourceKind::TorchFile);
  expect_error([&] { (void)resolve_checkpoint_source(p("does-not-exist")); }, ErrorCode::NotFound);
  expect_error([&] { (void)resolve_checkpoint_source(p("exp")); }, ErrorCode::NotFound);  // raw dumps only
}

TEST_F(LoadPython, TrainingCheckpointPicksEmaThenModel) {
  const fs::path ck = p("epoch1-global_step100");
  const ResolvedSource auto_pick = resolve_checkpoint_source(ck);
  EXPECT_EQ(auto_pick.path, ck / "ema.pt");
  expect_loads_into_buffers(ck, read_expected(p("ema_exp")));
  LoadOptions o;
  o.source.weights = WeightsChoice::Model;
  EXPECT_EQ(resolve_checkpoint_source(ck, o.source).path, ck / "model" / "model.safetensors.index.json");
  expect_loads_into_buffers(ck, expected(), o);
  // A ckptio-style folder (ema.safetensors) without EMA when asked for it.
  TempDir t;
  fs::create_directories(t / "model");
  fs::copy_file(p("model.safetensors"), t / "model" / "model.safetensors");
  testing::write_file(t / "ckptio.manifest.json", "{}");
  SourceOptions ema_only;
  ema_only.weights = WeightsChoice::Ema;
  expect_error([&] { (void)resolve_checkpoint_source(t.path(), ema_only); }, ErrorCode::NotFound);
  EXPECT_EQ(resolve_checkpoint_source(t.path()).path, t / "model" / "model.safetensors");
  fs::copy_file(p("model.safetensors"), t / "ema.safetensors");
  EXPECT_EQ(resolve_checkpoint_source(t.path()).path, t / "ema.safetensors");
}

TEST_F(LoadPython, NeverFallsBackToAPickleNextToSafetensors) {
  Buffers b(expected());
  expect_error([&] { (void)load_checkpoint(p("mixed"), b.targets); }, ErrorCode::Corrupt);
  LoadOptions no_pickle;
  no_pickle.source.allow_pickle = false;
  expect_error([&] { (void)load_checkpoint(p("pickle_only"), b.targets, no_pickle); }, ErrorCode::Unsafe);
  expect_error([&] { (void)load_checkpoint(p("model.pt"), b.targets, no_pickle); }, ErrorCode::Unsafe);
  expect_error([&] { (void)load_checkpoint(p("binfolder"), b.targets, no_pickle); }, ErrorCode::Unsafe);
}

TEST_F(LoadPython, ParallelAndSequentialReadsAgree) {
  for (int threads : {1, 2, 8}) {
    LoadOptions o;
    o.threads = threads;
    expect_loads_into_buffers(p("hf"), expected(), o);
  }
}

TEST_F(LoadPython, ConvertsToTheTargetDtype) {
  for (const char* src : {"hf", "model.pt"}) {
    Buffers b(expected(), DType::F32);
    // F64 -> F32 rounds: refused by default, with the one tensor named.
    const Error narrowing = expect_error([&] { (void)load_checkpoint(p(src), b.targets); }, ErrorCode::Mismatch);
    EXPECT_TRUE(contains(narrowing.message(), "1 mismatched (head.weight: source F64 [10, 32] vs target F32 [10, 32] (would round"))
        << narrowing.message();
    LoadOptions narrow;
    narrow.allow_narrowing = true;
    const LoadReport r = load_checkpoint(p(src), b.targets, narrow);
    EXPECT_EQ(r.converted.size(), 3u);  // bf16, f16 and f64 tensors
    for (size_t i = 0; i < expected().entries.size(); ++i) {
      const auto& e = expected().entries[i];
      if (!dtype_is_float(e.dtype)) {
        EXPECT_TRUE(b.bytes(i) == e.bytes) << e.name;
        continue;
      }
      std::vector<float> want(shape_numel(e.shape));
      if (want.empty()) continue;  // (convert_elements memmoves from a null pointer for 0 F32s)
      convert_elements(e.dtype, e.bytes.data(), DType::F32, want.data(), want.size());
      EXPECT_EQ(0, std::memcmp(want.data(), b.storage[i].data(), want.size() * 4)) << e.name;
    }
    LoadOptions no_convert;
    no_convert.convert_dtype = false;
    Buffers b2(expected(), DType::F32);
    const Error err = expect_error([&] { (void)load_checkpoint(p(src), b2.targets, no_convert); }, ErrorCode::Mismatch);
    EXPECT_TRUE(contains(err.message(), "source BF16 [96, 32] vs target F32 [96, 32]")) << err.message();
  }
}

TEST_F(LoadPython, StrictListsEverythingAndWritesNothing) {
  Buffers b(expected());
  b.targets.erase(b.targets.begin());  // embed.weight becomes unexpected
  Shape wrong = {10, 31};
  std::vector<std::byte> wrong_buf(tensor_nbytes(DType::F64, wrong));
  b.targets[7] = LoadTarget{"head.weight", DType::F64, wrong, wrong_buf};  // shape mismatch
  std::vector<std::byte> extra(4);
  b.targets.push_back({"not.in.source", DType::F32, {1}, extra});
  const Error e = expect_error([&] { (void)load_checkpoint(p("hf"), b.targets); }, ErrorCode::Mismatch);
  EXPECT_TRUE(contains(e.message(), "1 missing (not.in.source)")) << e.message();
  EXPECT_TRUE(contains(e.message(), "1 unexpected (embed.weight)")) << e.message();
  EXPECT_TRUE(contains(e.message(), "head.weight: source F64 [10, 32] vs target F64 [10, 31]")) << e.message();
  for (size_t i = 1; i < b.storage.size(); ++i) {
    for (std::byte x : b.storage[i]) ASSERT_EQ(x, std::byte{0xAB}) << "strict failure wrote target " << i;
  }
  LoadOptions lax;
  lax.strict = false;
  const LoadReport r = load_checkpoint(p("hf"), b.targets, lax);
  EXPECT_EQ(r.missing, std::vector<std::string>{"not.in.source"});
  EXPECT_EQ(r.unexpected, std::vector<std::string>{"embed.weight"});
  EXPECT_EQ(r.mismatched.size(), 1u);
  EXPECT_EQ(r.loaded.size(), expected().entries.size() - 2);
  EXPECT_TRUE(b.bytes(1) == expected().entries[1].bytes);
  EXPECT_TRUE(contains(r.summary(), "1 missing: not.in.source")) << r.summary();
}

TEST_F(LoadPython, RenameKeysFirstMatchWins) {
  Buffers b(expected(), std::nullopt, "net.");
  LoadOptions o;
  o.rename_keys = {{"layers.", "net.layers."}, {"layers.0", "WRONG"}, {"", "net."}};
  const LoadReport r = load_checkpoint(p("model.safetensors"), b.targets, o);
  EXPECT_TRUE(r.ok()) << r.summary();
  for (size_t i = 0; i < expected().entries.size(); ++i) EXPECT_TRUE(b.bytes(i) == expected().entries[i].bytes) << i;
  o.rename_keys = {{"layers.0.norm.weight", "embed.weight"}};  // two sources, one name
  expect_error([&] { (void)load_checkpoint(p("model.safetensors"), b.targets, o); }, ErrorCode::InvalidArgument);
}

TEST_F(LoadPython, BadTargetsAreRefused) {
  Buffers b(expected());
  b.targets.push_back(b.targets.front());
  expect_error([&] { (void)load_checkpoint(p("hf"), b.targets); }, ErrorCode::InvalidArgument);
  Buffers c(expected());
  c.targets[0].buffer = c.targets[0].buffer.first(3);
  expect_error([&] { (void)load_checkpoint(p("hf"), c.targets); }, ErrorCode::InvalidArgument);
}

TEST_F(LoadPython, NoTargetGivesZeroCopyViews) {
  for (const char* src : {"model.safetensors", "hf", "model.pt"}) {
    const LoadedCheckpoint c = load_checkpoint(p(src));
    ASSERT_EQ(c.tensors.size(), expected().entries.size()) << src;
    for (const auto& e : expected().entries) {
      const Tensor& t = c.tensors.at(e.name);
      EXPECT_EQ(t.dtype(), e.dtype);
      EXPECT_EQ(t.shape(), e.shape);
      EXPECT_TRUE(std::string(reinterpret_cast<const char*>(t.bytes().data()), t.nbytes()) == e.bytes) << e.name;
    }
    if (std::string(src) != "model.pt") {
      EXPECT_EQ(c.tensors.at("embed.weight").storage(), Tensor::Storage::Mapped) << src;
    }
  }
  LoadOptions o;
  o.dtype = DType::BF16;
  o.rename_keys = {{"layers.", "blocks."}};
  const LoadedCheckpoint c = load_checkpoint(p("hf"), o);
  EXPECT_EQ(c.tensors.at("embed.weight").dtype(), DType::BF16);
  EXPECT_EQ(c.tensors.at("blocks.0.norm.num_batches_tracked").dtype(), DType::I64);
  EXPECT_EQ(c.report.converted.size(), 6u);  // every float tensor that is not BF16 already
}

// --- dtype conversion rules (no PyTorch needed) --------------------------------------------------

class LoadDtype : public ::testing::Test {
 protected:
  // One F32 tensor "w" holding `values`, in a fresh safetensors file.
  fs::path f32_file(const std::vector<float>& values) {
    Tensor t = Tensor::empty(DType::F32, {static_cast<int64_t>(values.size())});
    std::memcpy(t.mutable_bytes().data(), values.data(), values.size() * 4);
    const fs::path path = dir_ / ("f32_" + std::to_string(files_++) + ".safetensors");
    save_safetensors(path, std::vector<NamedTensor>{{"w", t.view()}});
    return path;
  }
  fs::path typed_file(DType dtype, const std::vector<float>& values) {
    Tensor t = Tensor::empty(dtype, {static_cast<int64_t>(values.size())});
    convert_elements(DType::F32, values.data(), dtype, t.mutable_bytes().data(), values.size());
    const fs::path path = dir_ / ("typed_" + std::to_string(files_++) + ".safetensors");
    save_safetensors(path, std::vector<NamedTensor>{{"w", t.view()}});
    return path;
  }
  TempDir dir_;
  int files_ = 0;
};

struct OneTarget {
  std::vector<std::byte> buffer;
  std::vector<LoadTarget> targets;
  OneTarget(DType dtype, size_t n) : buffer(tensor_nbytes(dtype, Shape{static_cast<int64_t>(n)}), std::byte{0xAB}) {
    targets.push_back({"w", dtype, {static_cast<int64_t>(n)}, buffer});
  }
  std::vector<float> as_f32(DType dtype) const {
    std::vector<float> out(targets[0].shape[0]);
    convert_elements(dtype, buffer.data(), DType::F32, out.data(), out.size());
    return out;
  }
};

TEST_F(LoadDtype, NarrowingIsRefusedUnlessAllowed) {
  const fs::path src = f32_file({1.0f, 1.0f + 0x1p-20f, 3.0f});  // the middle value has no BF16
  OneTarget bf16(DType::BF16, 3);
  const Error e = expect_error([&] { (void)load_checkpoint(src, bf16.targets); }, ErrorCode::Mismatch);
  EXPECT_TRUE(contains(e.message(), "w: source F32 [3] vs target BF16 [3] (would round; allow_narrowing"))
      << e.message();
  for (std::byte x : bf16.buffer) ASSERT_EQ(x, std::byte{0xAB}) << "a refused load wrote the target";
  LoadOptions lax;
  lax.strict = false;
  EXPECT_EQ(load_checkpoint(src, bf16.targets, lax).mismatched.size(), 1u);

  LoadOptions narrow;
  narrow.allow_narrowing = true;
  const LoadReport r = load_checkpoint(src, bf16.targets, narrow);
  EXPECT_EQ(r.converted, std::vector<std::string>{"w"});
  EXPECT_EQ(bf16.as_f32(DType::BF16), (std::vector<float>{1.0f, 1.0f, 3.0f}));
}

TEST_F(LoadDtype, WideningConvertsByDefaultAndExactly) {
  const std::vector<float> values = {1.0f, -0.0f, 448.0f, 0x1p-9f, INFINITY};
  struct Pair { DType from, to; };
  for (Pair pair : {Pair{DType::F16, DType::F32}, Pair{DType::BF16, DType::F32}, Pair{DType::F32, DType::F64},
                    Pair{DType::F8_E4M3, DType::F16}, Pair{DType::F8_E4M3, DType::BF16},
                    Pair{DType::F8_E5M2, DType::F16}}) {
    SCOPED_TRACE(std::string(dtype_name(pair.from)) + " -> " + std::string(dtype_name(pair.to)));
    // (E4M3 has no infinity: its NaN stays NaN.)
    const fs::path src = typed_file(pair.from, values);
    OneTarget t(pair.to, values.size());
    EXPECT_EQ(load_checkpoint(src, t.targets).converted.size(), 1u);
    std::vector<double> want(values.size()), got(values.size());
    const Tensor stored = load_checkpoint(src).tensors.at("w");
    convert_elements(pair.from, stored.bytes().data(), DType::F64, want.data(), want.size());
    convert_elements(pair.to, t.buffer.data(), DType::F64, got.data(), got.size());
    for (size_t i = 0; i < values.size(); ++i) {
      if (std::isnan(want[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << i;
      } else {
        EXPECT_EQ(std::signbit(want[i]), std::signbit(got[i])) << i;
        EXPECT_EQ(want[i], got[i]) << i;
      }
    }
  }
  // Same width, different range or precision: narrowing both ways.
  for (auto [from, to] : {std::pair{DType::F16, DType::BF16}, std::pair{DType::BF16, DType::F16},
                          std::pair{DType::F8_E4M3, DType::F8_E5M2}, std::pair{DType::F16, DType::F8_E4M3FNUZ}}) {
    OneTarget t(to, 1);
    // Captured by copy: clang 14 (the sanitizer build) cannot capture a structured binding.
    expect_error([&, from = from] { (void)load_checkpoint(typed_file(from, {1.0f}), t.targets); },
                 ErrorCode::Mismatch);
  }
}

TEST_F(LoadDtype, OverflowIsAnErrorNamingTheTensorEvenWhenNarrowing) {
  const fs::path src = f32_file({1.0f, 1e6f, -2.0f});
  LoadOptions narrow;
  narrow.allow_narrowing = true;
  for (DType to : {DType::F8_E4M3, DType::F16, DType::F8_E5M2}) {
    SCOPED_TRACE(dtype_name(to));
    OneTarget t(to, 3);
    const Error e = expect_error([&] { (void)load_checkpoint(src, t.targets, narrow); }, ErrorCode::Mismatch);
    EXPECT_TRUE(contains(e.message(), "tensor 'w': element 1 (1000000) is out of the range of " +
                                          std::string(dtype_name(to))))
        << e.message();
  }
  // Opting in keeps what the conversion makes: NaN for E4M3 (no infinities), Inf for F16.
  narrow.allow_overflow = true;
  OneTarget e4m3(DType::F8_E4M3, 3);
  (void)load_checkpoint(src, e4m3.targets, narrow);
  EXPECT_TRUE(std::isnan(e4m3.as_f32(DType::F8_E4M3)[1]));
  EXPECT_EQ(e4m3.as_f32(DType::F8_E4M3)[2], -2.0f);
  // Non-finite sources are not overflow: Inf -> F16 stays Inf.
  OneTarget f16(DType::F16, 2);
  narrow.allow_overflow = false;
  (void)load_checkpoint(f32_file({INFINITY, NAN}), f16.targets, narrow);
  EXPECT_TRUE(std::isinf(f16.as_f32(DType::F16)[0]));
  EXPECT_TRUE(std::isnan(f16.as_f32(DType::F16)[1]));
}

TEST_F(LoadDtype, RequestedDtypeRoundsButOverflowIsAnError) {
  const fs::path src = f32_file({1.0f, 1e6f});
  LoadOptions o;
  o.dtype = DType::F8_E4M3;
  const Error e = expect_error([&] { (void)load_checkpoint(src, o); }, ErrorCode::Mismatch);
  EXPECT_TRUE(contains(e.message(), "tensor 'w': element 1")) << e.message();
  o.dtype = DType::BF16;  // rounding is what asking for a dtype means
  EXPECT_EQ(load_checkpoint(f32_file({1.0f + 0x1p-20f}), o).tensors.at("w").dtype(), DType::BF16);
  o.dtype = DType::F8_E4M3;
  o.allow_overflow = true;
  const Tensor w = load_checkpoint(src, o).tensors.at("w");
  float back[2];
  convert_elements(DType::F8_E4M3, w.bytes().data(), DType::F32, back, 2);
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_TRUE(std::isnan(back[1]));
}

// --- convert ----------------------------------------------------------------------------------

TEST_F(LoadPython, SafetensorsToSafetensorsIsByteIdenticalToTheReferenceLayout) {
  TempDir out;
  for (const char* src : {"model.safetensors", "nometa.safetensors"}) {
    ConvertOptions o;
    o.sync = false;
    convert_checkpoint(p(src), out / "copy.safetensors", o);
    EXPECT_TRUE(testing::read_file(out / "copy.safetensors") == testing::read_file(p(src))) << src;
  }
}

TEST_F(LoadPython, BinFolderBecomesAModelSafetensorsFolder) {
  TempDir out;
  ConvertOptions o;
  o.max_shard_size = 10000;
  o.sync = false;
  const ConvertReport r = convert_checkpoint(p("binfolder"), out / "converted", o);
  EXPECT_EQ(r.shards, 4u);
  // Same bytes as the transformers layout of the same state.
  for (const auto& entry : fs::directory_iterator(p("binfolder_expected"))) {
    const std::string n = entry.path().filename().string();
    EXPECT_TRUE(testing::read_file(out / "converted" / n) == testing::read_file(entry.path())) << n;
  }
  EXPECT_FALSE(fs::exists(out / "converted" / "pytorch_model.bin.index.json"));
}

TEST_F(LoadPython, ConvertWithDtypeAndShardingRoundTrips) {
  TempDir out;
  ConvertOptions o;
  o.dtype = DType::F32;
  o.max_shard_size = parse_size("5KB");
  o.sync = false;
  convert_checkpoint(p("model.pt"), out / "f32", o);
  Buffers b(expected(), DType::F32);
  EXPECT_TRUE(load_checkpoint(out / "f32", b.targets).ok());
  // Sharded back to one file.
  ConvertOptions one;
  one.sync = false;
  convert_checkpoint(out / "f32", out / "one.safetensors", one);
  EXPECT_TRUE(diff_checkpoints(out / "f32", out / "one.safetensors").equal());
  one.max_shard_size = 100;
  expect_error([&] { convert_checkpoint(out / "f32", out / "two.safetensors", one); }, ErrorCode::InvalidArgument);
}

// --- diff -------------------------------------------------------------------------------------

TEST_F(LoadPython, DiffComparesNamesDtypesShapesAndValues) {
  EXPECT_TRUE(diff_checkpoints(p("model.safetensors"), p("hf")).equal());
  EXPECT_TRUE(diff_checkpoints(p("model.pt"), p("binfolder")).equal());
  const DiffReport ema = diff_checkpoints(p("model.pt"), p("epoch1-global_step100"));
  EXPECT_EQ(ema.difference_count, 6u);  // every non-empty float tensor doubled
  EXPECT_TRUE(contains(ema.differences[0], "values differ")) << ema.differences[0];

  // Tolerances: a small perturbation passes atol, not exact.
  TempDir t;
  Tensor a = Tensor::zeros(DType::F32, {4});
  Tensor b = Tensor::zeros(DType::F32, {4});
  const float av[4] = {1.0f, 2.0f, NAN, 100.0f};
  const float bv[4] = {1.0f, 2.001f, NAN, 101.0f};
  std::memcpy(a.mutable_bytes().data(), av, 16);
  std::memcpy(b.mutable_bytes().data(), bv, 16);
  Tensor i = Tensor::zeros(DType::I64, {2});
  save_safetensors(t / "a.safetensors", std::vector<NamedTensor>{{"x", a.view()}, {"i", i.view()}, {"onlya", i.view()}});
  save_safetensors(t / "b.safetensors", std::vector<NamedTensor>{{"x", b.view()}, {"i", b.view()}, {"onlyb", i.view()}});
  const DiffReport exact = diff_checkpoints(t / "a.safetensors", t / "b.safetensors");
  ASSERT_EQ(exact.difference_count, 4u);
  EXPECT_TRUE(contains(exact.differences[0], "i: A is I64 [2], B is F32 [4]")) << exact.differences[0];
  EXPECT_TRUE(contains(exact.differences[1], "onlya: only in A")) << exact.differences[1];
  EXPECT_TRUE(contains(exact.differences[2], "x: 2 of 4 values differ (first at element 1")) << exact.differences[2];
  EXPECT_TRUE(contains(exact.differences[3], "onlyb: only in B")) << exact.differences[3];
  DiffOptions tol;
  tol.atol = 0.01;
  tol.rtol = 0.011;
  EXPECT_EQ(diff_checkpoints(t / "a.safetensors", t / "b.safetensors", tol).difference_count, 3u);
  tol.rtol = 0.009;
  EXPECT_EQ(diff_checkpoints(t / "a.safetensors", t / "b.safetensors", tol).difference_count, 4u);
}

}  // namespace
}  // namespace ckptio
