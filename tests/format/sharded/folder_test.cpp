// Sharded folders on disk: round trips through every size boundary, byte equality with the
// transformers layout, reading Hugging Face / ColossalAI / pytorch_model.bin folders made by
// PyTorch, stale-file handling, crash consistency under injected faults, and every bad folder.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <numeric>

#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/safetensors.h"
#include "ckptio/sharded.h"
#include "format/sharded/python_fixtures.h"
#include "format/sharded/seeded_tensors.h"
#include "support/expect_error.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

using State = testing::SeededTensors;

State u8_state(const std::vector<int64_t>& sizes, uint8_t seed = 1) {
  State s;
  for (size_t i = 0; i < sizes.size(); ++i) {
    s.add("t" + std::to_string(i), DType::U8, {sizes[i]}, static_cast<uint8_t>(seed + i));
  }
  return s;
}

ShardedWriteOptions opts(uint64_t max, int threads = 0) {
  ShardedWriteOptions o;
  o.max_shard_size = max;
  o.threads = threads;
  o.sync = false;
  return o;
}

std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

void expect_reads_back(const fs::path& dir, const State& s) {
  const ShardedReader r = ShardedReader::open(dir);
  ASSERT_EQ(r.tensor_count(), s.names.size());
  for (size_t i = 0; i < s.names.size(); ++i) {
    const Tensor t = r.tensor(s.names[i]);
    EXPECT_EQ(t.shape(), s.tensors[i].shape()) << s.names[i];
    ASSERT_EQ(t.nbytes(), s.tensors[i].nbytes());
    EXPECT_EQ(0, std::memcmp(t.bytes().data(), s.tensors[i].bytes().data(), t.nbytes())) << s.names[i];
  }
}

using testing::expect_error;

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

TEST(ShardedFolder, RoundTripsThroughEverySizeBoundary) {
  // 100-byte limit: exactly full, one past, oversize alone, a zero-byte tensor, and single-thread
  // as well as parallel writers.
  for (int threads : {1, 4}) {
    TempDir tmp;
    const State s = u8_state({60, 40, 1, 150, 100, 0});
    const auto result = save_sharded(tmp.path(), s.views(), opts(100, threads));
    ASSERT_EQ(result.shards.size(), 4u);
    ASSERT_TRUE(result.index.has_value());
    EXPECT_EQ(result.total_size, 351u);
    EXPECT_EQ(listing(tmp.path()), (std::vector<std::string>{
                                       "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                                       "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                                       "model.safetensors.index.json"}));
    expect_reads_back(tmp.path(), s);
    const auto index = nlohmann::json::parse(testing::read_file(tmp / "model.safetensors.index.json"));
    EXPECT_EQ(index["metadata"]["total_size"], 351);
    EXPECT_EQ(index["weight_map"]["t3"], "model-00003-of-00004.safetensors");
    EXPECT_EQ(index["weight_map"]["t5"], "model-00004-of-00004.safetensors");
    // Each shard is a valid safetensors file with {"format": "pt"} and exactly its tensors.
    const auto shard = SafetensorsReader::open(tmp / "model-00001-of-00004.safetensors");
    EXPECT_EQ(shard.metadata()->at("format"), "pt");
    EXPECT_EQ(shard.tensors().size(), 2u);
    EXPECT_EQ(fs::file_size(tmp / "model-00001-of-00004.safetensors"), result.shards[0].size);
  }
}

TEST(ShardedFolder, AtTheLimitIsOneFileWithoutIndex) {
  TempDir tmp;
  const State s = u8_state({60, 40});
  ShardedWriteOptions o = opts(100);
  o.metadata = {{"step", "7"}};
  const auto result = save_sharded(tmp.path(), s.views(), o);
  EXPECT_FALSE(result.index.has_value());
  EXPECT_EQ(listing(tmp.path()), std::vector<std::string>{"model.safetensors"});
  const auto r = SafetensorsReader::open(tmp / "model.safetensors");
  EXPECT_EQ(r.metadata()->at("step"), "7");  // user metadata goes into the file when unsharded
  EXPECT_EQ(r.metadata()->at("format"), "pt");
  // One byte more and it is two shards.
  TempDir tmp2;
  EXPECT_EQ(save_sharded(tmp2.path(), u8_state({60, 41}).views(), opts(100)).shards.size(), 2u);
}

TEST(ShardedFolder, EmptyStateIsAnEmptyLoadableFile) {
  TempDir tmp;
  ShardedWriteOptions o = opts(100);
  o.base_name = "ema";
  const auto result = save_sharded(tmp / "sub", {}, o);
  ASSERT_EQ(result.shards.size(), 1u);
  EXPECT_EQ(result.shards[0].name, "ema.safetensors");
  EXPECT_TRUE(SafetensorsReader::open(tmp / "sub" / "ema.safetensors").tensors().empty());
}

TEST(ShardedFolder, BaseNameAndReservedMetadata) {
  TempDir tmp;
  ShardedWriteOptions o = opts(50);
  o.base_name = "optimizer";
  o.metadata = {{"param_groups", "[]"}};
  save_sharded(tmp.path(), u8_state({40, 40}).views(), o);
  EXPECT_TRUE(fs::exists(tmp / "optimizer-00002-of-00002.safetensors"));
  const auto r = ShardedReader::open(tmp / "optimizer.safetensors.index.json");
  EXPECT_EQ(r.index().metadata.at("param_groups"), "[]");
  o.metadata = {{"total_size", "1"}};
  expect_error([&] { save_sharded(tmp.path(), u8_state({1}).views(), o); }, ErrorCode::InvalidArgument);
}

TEST(ShardedFolder, ParallelReadsConvertIntoCallerBuffers) {
  TempDir tmp;
  State s;
  s.tensors.push_back(Tensor::zeros(DType::BF16, {3000}));
  s.names.push_back("w");
  auto b = s.tensors[0].mutable_bytes();
  for (size_t i = 0; i < 3000; ++i) {
    const uint16_t v = f32_to_bf16(static_cast<float>(i % 256) - 128.0f);  // exact in BF16
    std::memcpy(b.data() + 2 * i, &v, 2);
  }
  s.add("raw", DType::U8, {5000}, 3);
  save_sharded(tmp.path(), s.views(), opts(6000));
  const auto r = ShardedReader::open(tmp.path());
  std::vector<float> w(3000);
  std::vector<std::byte> raw(5000);
  const std::vector<ReadRequest> req = {
      {"w", DType::F32, std::as_writable_bytes(std::span(w))}, {"raw", DType::U8, raw}};
  EXPECT_EQ(r.read_into_many(req, 4), 6000u + 5000u);
  for (size_t i = 0; i < 3000; ++i) ASSERT_EQ(w[i], static_cast<float>(i % 256) - 128.0f) << i;
  EXPECT_EQ(0, std::memcmp(raw.data(), s.tensors[1].bytes().data(), 5000));
  std::vector<std::byte> wrong(7);
  const std::vector<ReadRequest> bad = {{"raw", DType::U8, wrong}};
  expect_error([&] { r.read_into_many(bad); }, ErrorCode::InvalidArgument);
  const std::vector<ReadRequest> unknown = {{"nope", DType::U8, wrong}};
  expect_error([&] { r.read_into_many(unknown); }, ErrorCode::NotFound);
}

// --- stale files and crash consistency --------------------------------------------------------

TEST(ShardedFolder, RemovesStaleFilesOfEarlierSavesOnlyAfterTheIndex) {
  TempDir tmp;
  save_sharded(tmp.path(), u8_state({50, 50, 50}).views(), opts(50));  // 3 shards
  testing::write_file(tmp / ".model-00002-of-00003.safetensors.tmp-abc", "debris");
  testing::write_file(tmp / "config.json", "{}");                       // not ours
  testing::write_file(tmp / "other-00001-of-00002.safetensors", "x");   // another base name
  const State two = u8_state({50, 50}, 9);
  const auto r2 = save_sharded(tmp.path(), two.views(), opts(50));
  EXPECT_EQ(listing(tmp.path()), (std::vector<std::string>{
                                     "config.json", "model-00001-of-00002.safetensors",
                                     "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                                     "other-00001-of-00002.safetensors"}));
  EXPECT_EQ(r2.removed.size(), 3u);
  expect_reads_back(tmp.path(), two);
  // Sharded -> single: the index and the shards go.
  const State one = u8_state({10}, 4);
  save_sharded(tmp.path(), one.views(), opts(50));
  EXPECT_EQ(listing(tmp.path()), (std::vector<std::string>{"config.json", "model.safetensors",
                                                           "other-00001-of-00002.safetensors"}));
  // Single -> sharded: the single file goes (a ColossalAI-named leftover too).
  testing::write_file(tmp / "model-00007.safetensors", "old colossal shard");
  save_sharded(tmp.path(), u8_state({50, 50}).views(), opts(50));
  EXPECT_FALSE(fs::exists(tmp / "model.safetensors"));
  EXPECT_FALSE(fs::exists(tmp / "model-00007.safetensors"));
}

TEST(ShardedFolder, FailedSaveWithNewNamesLeavesTheOldSaveLoadable) {
  TempDir tmp;
  const State old_state = u8_state({50, 50}, 1);
  save_sharded(tmp.path(), old_state.views(), opts(50));
  io::FaultInjectingEnv env;
  env.inject({io::FaultOp::Open, 1, EIO, "index.json"});
  ShardedWriteOptions o = opts(50);
  o.env = &env;
  expect_error([&] { save_sharded(tmp.path(), u8_state({50, 50, 50}, 5).views(), o); }, ErrorCode::IoError);
  expect_reads_back(tmp.path(), old_state);  // the old index still names complete old shards
  // No temp debris; the orphaned new shards are flagged by verify.
  for (const auto& n : listing(tmp.path())) EXPECT_FALSE(io::is_temp_name(n)) << n;
  const auto report = verify_sharded(tmp.path());
  EXPECT_EQ(report.warnings.size(), 3u);
  EXPECT_TRUE(contains(report.warnings[0], "not referenced"));
}

TEST(ShardedFolder, FailedSaveOverSameNamesNeverShowsAMix) {
  TempDir tmp;
  save_sharded(tmp.path(), u8_state({50, 50}, 1).views(), opts(50));
  io::FaultInjectingEnv env;
  env.inject({io::FaultOp::Open, 1, ENOSPC, "index.json"});
  ShardedWriteOptions o = opts(50);
  o.env = &env;
  expect_error([&] { save_sharded(tmp.path(), u8_state({50, 50}, 7).views(), o); }, ErrorCode::NoSpace);
  // New shards replaced the old ones, so the old index was retired first: no index, no mix.
  EXPECT_FALSE(fs::exists(tmp / "model.safetensors.index.json"));
  expect_error([&] { ShardedReader::open(tmp.path()); }, ErrorCode::NotFound);
}

TEST(ShardedFolder, FailedShardWriteRemovesItsTempsAndKeepsTheOldSave) {
  TempDir tmp;
  const State old_state = u8_state({50, 50}, 1);
  save_sharded(tmp.path(), old_state.views(), opts(50));
  for (const io::FaultOp op : {io::FaultOp::Write, io::FaultOp::Sync, io::FaultOp::Rename}) {
    io::FaultInjectingEnv env;
    env.inject({op, 2, EIO, ""});
    ShardedWriteOptions o = opts(50, 1);
    o.sync = true;
    o.env = &env;
    expect_error([&] { save_sharded(tmp.path(), u8_state({50, 50}, 8).views(), o); }, ErrorCode::IoError);
    for (const auto& n : listing(tmp.path())) EXPECT_FALSE(io::is_temp_name(n)) << n;
    if (op != io::FaultOp::Rename) expect_reads_back(tmp.path(), old_state);
  }
}

// --- folders written by PyTorch ---------------------------------------------------------------

struct Expected {
  std::vector<std::tuple<std::string, std::string, Shape>> listing;
  std::vector<std::string> bytes;
};

Expected read_expected(const fs::path& dir) {
  Expected e;
  const auto j = nlohmann::json::parse(testing::read_file(dir / "listing.json"));
  for (size_t i = 0; i < j.size(); ++i) {
    e.listing.emplace_back(j[i][0].get<std::string>(), j[i][1].get<std::string>(), j[i][2].get<Shape>());
    e.bytes.push_back(testing::read_file(dir / (std::to_string(i) + ".raw")));
  }
  return e;
}

void expect_matches(const ShardedReader& r, const Expected& e) {
  ASSERT_EQ(r.tensor_count(), e.listing.size());
  for (size_t i = 0; i < e.listing.size(); ++i) {
    const auto& [name, dtype, shape] = e.listing[i];
    const Tensor t = r.tensor(name);
    EXPECT_EQ(dtype_name(t.dtype()), dtype) << name;
    EXPECT_EQ(t.shape(), shape) << name;
    ASSERT_EQ(t.nbytes(), e.bytes[i].size()) << name;
    EXPECT_EQ(0, std::memcmp(t.bytes().data(), e.bytes[i].data(), t.nbytes())) << name;
  }
}

// PyTorch starts slowly, so one Python run makes every folder this suite reads.
class ShardedPython : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing::python_has_torch()) return;
    const std::string code =
        "d = sys.argv[1]\nsd = model_state()\ndump_expected(d + '/exp', sd)\n"
        "save_hf(d + '/hf', sd, 10000)\n"
        "for lim in (10000, 5000, 100000):\n"
        "    save_hf(d + '/py%d' % lim, sd, lim)\n"
        "save_colossal(d + '/cai', sd, 0.01)\n"
        "save_bin_sharded(d + '/bin', sd, 10000)\n";
    const auto dir = testing::cached_python_fixture("sharded", testing::kShardFixturePython + code);
    ok_ = dir.has_value();
    if (ok_) dir_ = new fs::path(*dir);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!testing::python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
    ASSERT_TRUE(ok_) << "fixture script failed";
  }
  static inline fs::path* dir_ = nullptr;
  static inline bool ok_ = false;
  const fs::path& tmp = *dir_;
};

TEST_F(ShardedPython, ReadsTheHuggingFaceLayout) {
  const auto r = ShardedReader::open(tmp / "hf");
  EXPECT_EQ(r.index().flavour, IndexFlavour::HuggingFace);
  EXPECT_EQ(r.index().shard_files.size(), 4u);
  expect_matches(r, read_expected(tmp / "exp"));
  const auto report = verify_sharded(tmp / "hf");
  EXPECT_TRUE(report.warnings.empty()) << report.warnings[0];
  EXPECT_EQ(report.tensor_bytes, 33624u);
}

TEST_F(ShardedPython, WritesByteIdenticalToTheTransformersLayout) {
  // Python writes the layout from the same tensors; ckptio re-saves what it read and every file
  // must match byte for byte, for several limits (4 shards, oversize tensors, one file).
  const Expected e = read_expected(tmp / "exp");
  State s;
  for (size_t i = 0; i < e.listing.size(); ++i) {
    const auto& [name, dtype, shape] = e.listing[i];
    s.names.push_back(name);
    s.tensors.push_back(Tensor::copy_of(*parse_dtype(dtype), shape, std::as_bytes(std::span(e.bytes[i]))));
  }
  for (int lim : {10000, 5000, 100000}) {
    TempDir out;
    const fs::path mine = out / ("cc" + std::to_string(lim));
    save_sharded(mine, s.views(), opts(static_cast<uint64_t>(lim)));
    const fs::path py = tmp / ("py" + std::to_string(lim));
    ASSERT_EQ(listing(mine), listing(py)) << lim;
    for (const auto& n : listing(py)) {
      EXPECT_TRUE(testing::read_file(mine / n) == testing::read_file(py / n)) << lim << " " << n;
    }
  }
}

TEST_F(ShardedPython, ReadsTheColossalAILayout) {
  EXPECT_TRUE(fs::exists(tmp / "cai" / "model-00001.safetensors"));
  const auto r = ShardedReader::open(tmp / "cai");
  EXPECT_EQ(r.index().flavour, IndexFlavour::ColossalAI);
  expect_matches(r, read_expected(tmp / "exp"));
  const auto report = verify_sharded(tmp / "cai");
  EXPECT_TRUE(report.warnings.empty()) << report.warnings[0];
}

TEST_F(ShardedPython, ReadsPytorchModelBinShards) {
#if !CKPTIO_HAVE_TORCHFILE
  GTEST_SKIP() << "built without the torch pickle reader";
#endif
  const auto r = ShardedReader::open(tmp / "bin");
  EXPECT_EQ(r.index().flavour, IndexFlavour::TorchBin);
  expect_matches(r, read_expected(tmp / "exp"));
  EXPECT_TRUE(verify_sharded(tmp / "bin").warnings.empty());
}

// --- bad folders ------------------------------------------------------------------------------

class ShardedBadFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    save_sharded(tmp.path(), u8_state({50, 50, 50}).views(), opts(50));  // t0, t1, t2 in 3 shards
  }
  nlohmann::json index() { return nlohmann::json::parse(testing::read_file(tmp / "model.safetensors.index.json")); }
  void set_index(const nlohmann::json& j) { testing::write_file(tmp / "model.safetensors.index.json", j.dump(2)); }
  std::string shard(int i) { return "model-0000" + std::to_string(i) + "-of-00003.safetensors"; }
  // Opens and reads everything, as a load would.
  void load_all() {
    const auto r = ShardedReader::open(tmp.path());
    r.tensors();
  }
  TempDir tmp;
};

TEST_F(ShardedBadFolder, MissingShard) {
  fs::remove(tmp / shard(2));
  const Error e = expect_error([&] { load_all(); }, ErrorCode::NotFound);
  EXPECT_TRUE(contains(e.message(), shard(2)));
  EXPECT_TRUE(contains(e.message(), "model.safetensors.index.json"));
}

TEST_F(ShardedBadFolder, TensorInTwoShards) {
  // Shard 2 also holds t0, which the index assigns to shard 1.
  save_safetensors(tmp / shard(2), std::vector<NamedTensor>(u8_state({50, 50}).views()) /* t0, t1 */);
  const Error e = expect_error([&] { load_all(); }, ErrorCode::Corrupt);
  EXPECT_TRUE(contains(e.message(), "'t0' is in shard '" + shard(2) + "'")) << e.message();
  EXPECT_TRUE(contains(e.message(), shard(1))) << e.message();
}

TEST_F(ShardedBadFolder, TensorInAShardButNotInTheIndex) {
  State s = u8_state({50});
  s.names[0] = "t1";
  s.add("stowaway", DType::U8, {3}, 1);
  save_safetensors(tmp / shard(2), s.views());
  const Error e = expect_error([&] { load_all(); }, ErrorCode::Corrupt);
  EXPECT_TRUE(contains(e.message(), "'stowaway', which the index does not list")) << e.message();
}

TEST_F(ShardedBadFolder, IndexAssignsATensorTheShardLacks) {
  auto j = index();
  j["weight_map"]["ghost"] = shard(3);
  set_index(j);
  const Error e = expect_error([&] { load_all(); }, ErrorCode::Corrupt);
  EXPECT_TRUE(contains(e.message(), "assigns tensor 'ghost' to shard '" + shard(3) + "'")) << e.message();
}

TEST_F(ShardedBadFolder, TruncatedIndex) {
  const std::string text = testing::read_file(tmp / "model.safetensors.index.json");
  testing::write_file(tmp / "model.safetensors.index.json", text.substr(0, text.size() / 2));
  expect_error([&] { load_all(); }, ErrorCode::Corrupt);
}

TEST_F(ShardedBadFolder, TotalSizeMismatchAndUnreferencedShardAreWarningsOnly) {
  auto j = index();
  j["metadata"]["total_size"] = 12345;
  set_index(j);
  testing::write_file(tmp / "model-00009-of-00009.safetensors", "stale");
  load_all();  // loads fine
  const auto report = verify_sharded(tmp.path());
  ASSERT_EQ(report.warnings.size(), 2u);
  EXPECT_TRUE(contains(report.warnings[0], "total_size 12345")) << report.warnings[0];
  EXPECT_TRUE(contains(report.warnings[1], "model-00009-of-00009.safetensors")) << report.warnings[1];
  EXPECT_EQ(report.shards.size(), 3u);
  EXPECT_EQ(report.tensor_bytes, 150u);
}

TEST_F(ShardedBadFolder, PathsThatEscapeTheFolder) {
  for (const std::string& bad : {std::string("/etc/passwd.safetensors"), std::string("../x.safetensors"),
                                 std::string("a/../../x.safetensors")}) {
    auto j = index();
    j["weight_map"]["t0"] = bad;
    set_index(j);
    expect_error([&] { load_all(); }, ErrorCode::Corrupt);
  }
}

TEST_F(ShardedBadFolder, SymlinkOutsideIsRefusedInsideIsFine) {
  TempDir outside;
  fs::copy_file(tmp / shard(1), outside / "evil.safetensors");
  fs::remove(tmp / shard(1));
  fs::create_symlink(outside / "evil.safetensors", tmp / shard(1));
  const Error e = expect_error([&] { load_all(); }, ErrorCode::Unsafe);
  EXPECT_TRUE(contains(e.message(), "outside")) << e.message();
  // Allowed when the caller names a root that contains the target (a Hub cache's blobs/).
  ShardedReadOptions o;
  o.allowed_root = outside.path().parent_path();
  EXPECT_NO_THROW(ShardedReader::open(tmp.path(), o).tensors());
  // A symlink to a file inside the folder is fine.
  fs::remove(tmp / shard(1));
  fs::create_directories(tmp / "blobs");
  fs::copy_file(outside / "evil.safetensors", tmp / "blobs" / "b1");
  fs::create_symlink("blobs/b1", tmp / shard(1));
  EXPECT_NO_THROW(load_all());
  // A dangling symlink is a missing shard.
  fs::remove(tmp / "blobs" / "b1");
  expect_error([&] { load_all(); }, ErrorCode::NotFound);
}

TEST_F(ShardedBadFolder, WrongSuffixAndCaseDuplicates) {
  auto j = index();
  j["weight_map"]["t0"] = "pytorch_model-00001-of-00003.bin";
  set_index(j);
  expect_error([&] { load_all(); }, ErrorCode::Corrupt);
  j = index();
  j["weight_map"]["t0"] = "MODEL-00002-of-00003.safetensors";
  set_index(j);
  const Error e = expect_error([&] { load_all(); }, ErrorCode::Corrupt);
  EXPECT_TRUE(contains(e.message(), "differ only in case")) << e.message();
}

TEST_F(ShardedBadFolder, ShardThatIsNotSafetensors) {
  testing::write_file(tmp / shard(3), "this is not a safetensors file at all");
  const Error e = expect_error([&] { load_all(); }, ErrorCode::Corrupt);
  EXPECT_TRUE(contains(e.message(), "model.safetensors.index.json")) << e.message();
}

TEST_F(ShardedBadFolder, InterruptedSaveWithoutIndex) {
  fs::remove(tmp / "model.safetensors.index.json");
  expect_error([&] { ShardedReader::open(tmp.path()); }, ErrorCode::NotFound);
}

TEST_F(ShardedBadFolder, SeveralIndexFilesAreAmbiguousUnlessOneIsModel) {
  fs::copy_file(tmp / "model.safetensors.index.json", tmp / "model.fp16.safetensors.index.json");
  EXPECT_NO_THROW(ShardedReader::open(tmp.path()));  // model.safetensors.index.json wins
  fs::rename(tmp / "model.safetensors.index.json", tmp / "a.safetensors.index.json");
  expect_error([&] { ShardedReader::open(tmp.path()); }, ErrorCode::Corrupt);
}

}  // namespace
}  // namespace ckptio
