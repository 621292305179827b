// Reading files written by PyTorch itself, compared bit for bit with what PyTorch had in memory.
#include <gtest/gtest.h>

#include <cstring>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"
#include "format/torch/torch_fixtures.h"

namespace ckptio::pt {
namespace {

using ckptio::testing::expect_matches_manifest;

class TorchFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchFixture, MatchesWhatPyTorchHadInMemory) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const TorchFile file = load_torch_file(fixtures / (GetParam() + ".pt"));
  expect_matches_manifest(file.root, fixtures, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Files, TorchFixture,
                         ::testing::Values("model", "dtypes", "views", "parameters", "adamw",
                                           "training", "protocol4", "legacy", "legacy_views",
                                           "fileobj", "many", "bigendian"));

TEST(TorchFileRead, ZipMetadataAndZeroCopy) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const TorchFile file = load_torch_file(fixtures / "model.pt");
  EXPECT_EQ(file.format, TorchFormat::Zip);
  EXPECT_EQ(file.archive_prefix, "model");  // torch names the top folder after the file
  EXPECT_EQ(file.version, 3);
  EXPECT_FALSE(file.big_endian);
  ASSERT_FALSE(file.storages.empty());
  for (const auto& s : file.storages) {
    EXPECT_TRUE(s->zero_copy) << s->key;
    // torch aligns every record to 64 bytes in the file; the map is page-aligned.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(s->bytes.data()) % 64, 0u) << s->key;
  }
  const Tensor w = select_path(file.root, "0.weight").as_tensor().contiguous();
  EXPECT_EQ(w.storage(), Tensor::Storage::Mapped);
  EXPECT_EQ(w.shape(), (Shape{4, 3, 3, 3}));
}

TEST(TorchFileRead, FileObjectArchiveUsesArchivePrefix) {
  CKPTIO_NEED_TORCH_FIXTURES();
  EXPECT_EQ(load_torch_file(fixtures / "fileobj.pt").archive_prefix, "archive");
}

TEST(TorchFileRead, BigEndianIsSwappedIntoOwnedMemory) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const TorchFile file = load_torch_file(fixtures / "bigendian.pt");
  EXPECT_TRUE(file.big_endian);
  EXPECT_EQ(file.archive_prefix, "be");
  for (const auto& s : file.storages) {
    if (dtype_bits(s->dtype) > 8) {
      EXPECT_FALSE(s->zero_copy) << s->key;
    }
  }
}

TEST(TorchFileRead, LegacyStream) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const TorchFile file = load_torch_file(fixtures / "legacy.pt");
  EXPECT_EQ(file.format, TorchFormat::Legacy);
  EXPECT_EQ(file.version, 1001);
  EXPECT_EQ(select_path(file.root, "epoch").as_int(), 3);
}

TEST(TorchFileRead, TrainingCheckpointTreeAndDottedPaths) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const TorchFile file = load_torch_file(fixtures / "training.pt");
  const Value& root = file.root;
  ASSERT_TRUE(root.is_dict());
  EXPECT_EQ(select_path(root, "epoch").as_int(), 3);
  EXPECT_EQ(select_path(root, "loss").as_float(), 0.25);
  EXPECT_EQ(select_path(root, "name").as_str(), "run-7");
  EXPECT_EQ(select_path(root, "blob").kind(), Value::Kind::Bytes);
  EXPECT_EQ(select_path(root, "blob").as_str(), std::string("\x00\x01" "abc\xff", 6));
  EXPECT_EQ(select_path(root, "big").as_int(), int64_t{1} << 40);
  EXPECT_EQ(select_path(root, "pair").kind(), Value::Kind::Tuple);
  EXPECT_EQ(select_path(root, "pair.2").as_str(), "x");
  EXPECT_TRUE(select_path(root, "flags.2").is_none());
  // Optimizer state is keyed by int parameter ids; state-dict keys contain dots themselves.
  const Value& exp_avg = select_path(root, "optimizer.state.0.exp_avg");
  EXPECT_EQ(exp_avg.as_tensor().sizes, (Shape{4, 3, 3, 3}));
  EXPECT_EQ(select_path(root, "model.1.num_batches_tracked").as_tensor().dtype, DType::I64);
  EXPECT_EQ(select_path(root, "optimizer.param_groups.0.betas.1").as_float(), 0.999);
  const Value& model = select_path(root, "model");
  EXPECT_EQ(&select_path(model, "3.weight"), model.find("3.weight"));
  try {
    select_path(root, "optimizer.state.99");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(e.message().find("99"), std::string::npos) << e.message();
  }
  const auto tensors = flatten_tensors(root, "ckpt");
  EXPECT_TRUE(tensors.count("ckpt.optimizer.state.0.exp_avg_sq"));
  EXPECT_TRUE(tensors.count("ckpt.model.4.bias"));
  EXPECT_FALSE(tensors.count("ckpt.epoch"));
}

TEST(TorchFileRead, LoadStateDictSelectsAndFlattens) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const auto model = load_torch_state_dict(fixtures / "training.pt", "model");
  EXPECT_EQ(model.size(), 11u);  // conv w/b, bn w/b/mean/var/count, linear w/b, ln w/b
  EXPECT_EQ(model.at("1.num_batches_tracked").dtype(), DType::I64);
  int64_t count = 0;
  std::memcpy(&count, model.at("1.num_batches_tracked").bytes().data(), 8);
  EXPECT_EQ(count, 4);  // one forward in model() + three training steps
  const auto views = load_torch_state_dict(fixtures / "views.pt");
  const Tensor& t = views.at("transposed");
  EXPECT_EQ(t.shape(), (Shape{6, 4}));
  EXPECT_EQ(t.storage(), Tensor::Storage::Heap);  // gathered, not a view
  float first_row[4];
  std::memcpy(first_row, t.bytes().data(), sizeof first_row);
  EXPECT_EQ(first_row[1], 6.0f);
  EXPECT_EQ(views.at("base").storage(), Tensor::Storage::Mapped);
  EXPECT_THROW(load_torch_state_dict(fixtures / "training.pt", "nope"), Error);
}

TEST(TorchFileRead, CraftedControlLoads) {
  // The hand-made archive the hostile tests mutate is itself valid: their failures are real.
  CKPTIO_NEED_TORCH_FIXTURES();
  const auto sd = load_torch_state_dict(fixtures / "crafted_ok.pt");
  float v[3];
  std::memcpy(v, sd.at("t").bytes().data(), sizeof v);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[2], 3.0f);
}

TEST(TorchFileRead, InMemoryParseMatchesFileLoad) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const std::string bytes = ckptio::testing::read_file(fixtures / "adamw.pt");
  const TorchFile file = parse_torch_bytes(
      std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()), "adamw", nullptr);
  expect_matches_manifest(file.root, fixtures, "adamw");
}

}  // namespace
}  // namespace ckptio::pt
