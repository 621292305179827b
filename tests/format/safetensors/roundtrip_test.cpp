// Save -> load round trips through both reader modes: every dtype, rank 0, zero-size tensors,
// unicode names, metadata, 10,000 tensors; and save(load(f)) reproducing f byte for byte.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "ckptio/safetensors.h"
#include "format/safetensors/safetensors_test_util.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::capture_error;
using testing::random_bytes;
using testing::TempDir;

struct Owned {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<std::byte> bytes;
};

std::vector<NamedTensor> views_of(const std::vector<Owned>& owned) {
  std::vector<NamedTensor> v;
  for (const Owned& o : owned) v.push_back({o.name, {o.dtype, o.shape, o.bytes}});
  return v;
}

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// Opens `path` in both modes and checks every tensor of `want` by name, through tensor(),
// read_owned() and read_into(), plus the storage each returns.
void expect_file_holds(const fs::path& path, const std::vector<Owned>& want) {
  for (ReadMode mode : {ReadMode::Mmap, ReadMode::Pread}) {
    SCOPED_TRACE(mode == ReadMode::Mmap ? "mmap" : "pread");
    const SafetensorsReader reader = SafetensorsReader::open(path, {.mode = mode});
    EXPECT_EQ(reader.mode(), mode);
    EXPECT_EQ(reader.path(), path);
    EXPECT_EQ(reader.file_size(), fs::file_size(path));
    ASSERT_EQ(reader.tensors().size(), want.size());
    for (const Owned& w : want) {
      SCOPED_TRACE(w.name);
      const TensorInfo* info = reader.find(w.name);
      ASSERT_NE(info, nullptr);
      EXPECT_EQ(info->dtype, w.dtype);
      EXPECT_EQ(info->shape, w.shape);
      EXPECT_EQ(info->nbytes(), w.bytes.size());
      const Tensor t = reader.tensor(w.name);
      EXPECT_EQ(t.dtype(), w.dtype);
      EXPECT_EQ(t.shape(), w.shape);
      EXPECT_TRUE(same_bytes(t.bytes(), w.bytes));
      EXPECT_EQ(t.storage(), mode == ReadMode::Mmap ? Tensor::Storage::Mapped : Tensor::Storage::Heap);
      Tensor owned = reader.read_owned(w.name);
      EXPECT_EQ(owned.storage(), Tensor::Storage::Heap);
      EXPECT_TRUE(same_bytes(owned.bytes(), w.bytes));
      EXPECT_NO_THROW(owned.mutable_bytes());
      std::vector<std::byte> dst(w.bytes.size());
      reader.read_into(w.name, dst);
      EXPECT_TRUE(same_bytes(dst, w.bytes));
      // The raw file agrees with the header's offsets.
      std::vector<std::byte> raw(info->nbytes());
      reader.file().read_exact(reader.header().data_start + info->begin, raw);
      EXPECT_TRUE(same_bytes(raw, w.bytes));
    }
  }
}

Shape shape_for(DType d, int variant) {
  // Sub-byte types need whole bytes: 2 F4 or 4 F6 elements per step.
  const int64_t unit = dtype_bits(d) == 4 ? 2 : dtype_bits(d) == 6 ? 4 : 1;
  switch (variant) {
    case 0: return {unit * 3, 5};
    case 1: return {unit};
    default: return {2, 1, unit * 2, 3};
  }
}

TEST(SafetensorsRoundTrip, EveryDTypeBothModes) {
  TempDir dir;
  std::vector<Owned> owned;
  for (int i = 0; i < kDTypeCount; ++i) {
    const DType d = static_cast<DType>(i);
    for (int variant = 0; variant < 3; ++variant) {
      const Shape shape = shape_for(d, variant);
      owned.push_back({std::string(dtype_name(d)) + "." + std::to_string(variant), d, shape,
                       random_bytes(tensor_nbytes(d, shape), static_cast<uint32_t>(i * 3 + variant))});
    }
  }
  const fs::path path = dir / "all.safetensors";
  save_safetensors(path, views_of(owned));
  expect_file_holds(path, owned);
  const SafetensorsReader reader = SafetensorsReader::open(path);
  ASSERT_TRUE(reader.metadata().has_value());
  EXPECT_EQ(*reader.metadata(), (Metadata{{"format", "pt"}}));
}

TEST(SafetensorsRoundTrip, RankZeroAndZeroSize) {
  TempDir dir;
  std::vector<Owned> owned = {
      {"scalar.f64", DType::F64, {}, random_bytes(8, 1)},
      {"scalar.bool", DType::BOOL, {}, {std::byte{1}}},
      {"scalar.bf16", DType::BF16, {}, random_bytes(2, 2)},
      {"empty.f32", DType::F32, {0}, {}},
      {"empty.3d", DType::F32, {3, 0, 2}, {}},
      {"empty.f4", DType::F4, {0, 7}, {}},
      {"empty.u8", DType::U8, {0}, {}},
      {"data.f32", DType::F32, {4}, random_bytes(16, 3)},
      {"data.u8", DType::U8, {5}, random_bytes(5, 4)},
  };
  const fs::path path = dir / "edge.safetensors";
  save_safetensors(path, views_of(owned));
  expect_file_holds(path, owned);
}

TEST(SafetensorsRoundTrip, OnlyZeroSizeTensorsAndNoTensors) {
  TempDir dir;
  const std::vector<Owned> empties = {{"a", DType::F16, {0}, {}}, {"b", DType::I64, {2, 0}, {}}};
  save_safetensors(dir / "e.safetensors", views_of(empties));
  expect_file_holds(dir / "e.safetensors", empties);
  EXPECT_EQ(SafetensorsReader::open(dir / "e.safetensors").header().data_bytes, 0u);
  save_safetensors(dir / "none.safetensors", {});
  expect_file_holds(dir / "none.safetensors", {});
}

TEST(SafetensorsRoundTrip, UnicodeAndOddNames) {
  TempDir dir;
  std::vector<Owned> owned;
  const std::vector<std::string> names = {
      "模型.层.0.权重", "naïve café", "emoji 🙂 tensor", "ключ", "a\"quoted\"\\back",
      "tab\there\nnewline", std::string("nul\0inside", 10), "/abs/path", "../../etc/passwd",
      "", " ", "\x7F", std::string(5000, 'x')};
  for (size_t i = 0; i < names.size(); ++i) {
    owned.push_back({names[i], DType::I16, {static_cast<int64_t>(i + 1)}, random_bytes(2 * (i + 1), i)});
  }
  const fs::path path = dir / "names.safetensors";
  save_safetensors(path, views_of(owned));
  expect_file_holds(path, owned);
}

TEST(SafetensorsRoundTrip, MetadataVariants) {
  TempDir dir;
  const std::vector<Owned> owned = {{"w", DType::F32, {1}, random_bytes(4, 9)}};
  const Metadata custom = {{"format", "pt"}, {"step", "1200"}, {"ünï", "cödé\n\"x\""}, {"", ""}};
  struct Case {
    std::optional<Metadata> given;
    bool omit;
    std::optional<Metadata> expected;
  };
  for (const Case& c : {Case{std::nullopt, false, Metadata{{"format", "pt"}}},
                        Case{custom, false, custom}, Case{Metadata{}, false, Metadata{}},
                        Case{custom, true, std::nullopt}}) {
    SafetensorsWriteOptions options;
    options.metadata = c.given;
    options.omit_metadata = c.omit;
    save_safetensors(dir / "m.safetensors", views_of(owned), options);
    for (ReadMode mode : {ReadMode::Mmap, ReadMode::Pread}) {
      const SafetensorsReader reader = SafetensorsReader::open(dir / "m.safetensors", {.mode = mode});
      EXPECT_EQ(reader.metadata(), c.expected);
    }
  }
}

TEST(SafetensorsRoundTrip, TenThousandTensors) {
  TempDir dir;
  std::vector<Owned> owned;
  const DType dtypes[] = {DType::F32, DType::BF16, DType::F16, DType::I64, DType::U8, DType::F8_E4M3};
  std::mt19937 rng(7);
  for (int i = 0; i < 10'000; ++i) {
    const DType d = dtypes[rng() % 6];
    const Shape shape = (i % 97 == 0) ? Shape{0} : Shape{static_cast<int64_t>(rng() % 4 + 1), 3};
    owned.push_back({"layers." + std::to_string(i / 16) + ".p" + std::to_string(i % 16), d, shape,
                     random_bytes(tensor_nbytes(d, shape), static_cast<uint32_t>(i))});
  }
  const fs::path path = dir / "10k.safetensors";
  save_safetensors(path, views_of(owned));
  expect_file_holds(path, owned);
  // Data order is by descending dtype, then name.
  const SafetensorsReader reader = SafetensorsReader::open(path);
  const auto& t = reader.tensors();
  for (size_t i = 1; i < t.size(); ++i) {
    ASSERT_TRUE(t[i - 1].dtype > t[i].dtype ||
                (t[i - 1].dtype == t[i].dtype && t[i - 1].name < t[i].name))
        << t[i - 1].name << " before " << t[i].name;
  }
}

TEST(SafetensorsRoundTrip, SaveOfLoadedFileIsByteIdentical) {
  TempDir dir;
  std::vector<Owned> owned;
  for (int i = 0; i < 40; ++i) {
    const DType d = static_cast<DType>(i % kDTypeCount);
    const Shape shape = shape_for(d, i % 3);
    owned.push_back({"t" + std::to_string(i), d, shape,
                     random_bytes(tensor_nbytes(d, shape), static_cast<uint32_t>(100 + i))});
  }
  SafetensorsWriteOptions options;
  options.metadata = Metadata{{"format", "pt"}, {"note", "round trip"}};
  save_safetensors(dir / "a.safetensors", views_of(owned), options);
  for (ReadMode mode : {ReadMode::Mmap, ReadMode::Pread}) {
    const SafetensorsReader reader = SafetensorsReader::open(dir / "a.safetensors", {.mode = mode});
    std::vector<Tensor> keep;
    std::vector<NamedTensor> again;
    for (const TensorInfo& info : reader.tensors()) {
      keep.push_back(reader.tensor(info.name));
      again.push_back({info.name, keep.back().view()});
    }
    SafetensorsWriteOptions same;
    same.metadata = reader.metadata();
    save_safetensors(dir / "b.safetensors", again, same);
    EXPECT_EQ(testing::read_file(dir / "b.safetensors"), testing::read_file(dir / "a.safetensors"));
    EXPECT_EQ(serialize_safetensors(again, same), testing::read_file(dir / "a.safetensors"));
  }
}

TEST(SafetensorsReader, LookupErrors) {
  TempDir dir;
  const std::vector<Owned> owned = {{"w", DType::F32, {2}, random_bytes(8, 5)}};
  save_safetensors(dir / "x.safetensors", views_of(owned));
  for (ReadMode mode : {ReadMode::Mmap, ReadMode::Pread}) {
    const SafetensorsReader reader = SafetensorsReader::open(dir / "x.safetensors", {.mode = mode});
    EXPECT_EQ(reader.find("nope"), nullptr);
    EXPECT_EQ(reader.find("W"), nullptr);
    for (const auto& thrown : {capture_error([&] { reader.info("nope"); }),
                               capture_error([&] { reader.tensor("nope"); }),
                               capture_error([&] { reader.read_owned("nope"); })}) {
      EXPECT_EQ(thrown.code, ErrorCode::NotFound);
      EXPECT_NE(thrown.message.find("x.safetensors"), std::string::npos) << thrown.message;
      EXPECT_NE(thrown.message.find("nope"), std::string::npos) << thrown.message;
    }
    std::vector<std::byte> small(7);
    EXPECT_EQ(capture_error([&] { reader.read_into("w", small); }).code, ErrorCode::InvalidArgument);
  }
  const auto missing = capture_error([&] { SafetensorsReader::open(dir / "absent.safetensors"); });
  EXPECT_EQ(missing.code, ErrorCode::NotFound);
  EXPECT_NE(missing.message.find("absent.safetensors"), std::string::npos) << missing.message;
  const auto missing_pread =
      capture_error([&] { SafetensorsReader::open(dir / "absent.safetensors", {.mode = ReadMode::Pread}); });
  EXPECT_EQ(missing_pread.code, ErrorCode::NotFound);
  const auto folder = capture_error([&] { SafetensorsReader::open(dir.path()); });
  EXPECT_TRUE(folder.threw);
}

TEST(SafetensorsReader, MappedTensorsOutliveTheReader) {
  TempDir dir;
  const std::vector<Owned> owned = {{"w", DType::F64, {3}, random_bytes(24, 6)}};
  save_safetensors(dir / "x.safetensors", views_of(owned));
  Tensor survivor;
  {
    const SafetensorsReader reader = SafetensorsReader::open(dir / "x.safetensors");
    survivor = reader.tensor("w");
  }
  fs::remove(dir / "x.safetensors");
  EXPECT_EQ(survivor.storage(), Tensor::Storage::Mapped);
  EXPECT_TRUE(same_bytes(survivor.bytes(), owned[0].bytes));
  EXPECT_EQ(capture_error([&] { survivor.mutable_bytes(); }).code, ErrorCode::InvalidArgument);
}

}  // namespace
}  // namespace ckptio
