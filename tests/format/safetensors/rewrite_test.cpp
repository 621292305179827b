// Crash-safe writes: replacing a file that a live reader has memory-mapped (safetensors issue
// #762: truncating in place zero-filled it), failures leaving the old file, relative paths.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
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

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

size_t entries_in(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(SafetensorsRewrite, SavingALoadedFileOverItselfWhileMapped) {
  TempDir dir;
  const fs::path path = dir / "model.safetensors";
  const auto w = random_bytes(1 << 20, 1);
  const auto b = random_bytes(4096, 2);
  save_safetensors(path, std::vector<NamedTensor>{{"w", {DType::F32, {1 << 18}, w}},
                                                  {"b", {DType::U8, {4096}, b}}});
  const std::string original = testing::read_file(path);

  // load_file -> save_file(same path) with zero-copy views of the file being replaced.
  const SafetensorsReader reader = SafetensorsReader::open(path);
  const Tensor tw = reader.tensor("w");
  const Tensor tb = reader.tensor("b");
  ASSERT_EQ(tw.storage(), Tensor::Storage::Mapped);
  save_safetensors(path, std::vector<NamedTensor>{{"w", tw.view()}, {"b", tb.view()}});
  EXPECT_EQ(testing::read_file(path), original) << "rewriting a mapped file changed its bytes";
  EXPECT_TRUE(same_bytes(tw.bytes(), w));

  // Replace it with different content: the old views still see the old bytes (the mapping
  // pins the old inode), the file on disk is the new one, and no temp file is left.
  const auto w2 = random_bytes(1 << 20, 3);
  save_safetensors(path, std::vector<NamedTensor>{{"w", {DType::F32, {1 << 18}, w2}}});
  EXPECT_TRUE(same_bytes(tw.bytes(), w)) << "a live mapping saw the new file's bytes";
  EXPECT_TRUE(same_bytes(tb.bytes(), b));
  const SafetensorsReader fresh = SafetensorsReader::open(path);
  EXPECT_TRUE(same_bytes(fresh.tensor("w").bytes(), w2));
  EXPECT_EQ(fresh.find("b"), nullptr);
  EXPECT_EQ(entries_in(dir.path()), 1u);
}

TEST(SafetensorsRewrite, FailedSaveLeavesTheOldFileAndNoTemp) {
  TempDir dir;
  const fs::path path = dir / "m.safetensors";
  const auto w = random_bytes(64, 4);
  save_safetensors(path, std::vector<NamedTensor>{{"w", {DType::F32, {16}, w}}});
  const std::string before = testing::read_file(path);
  // Invalid input is refused before anything touches the folder.
  const auto refused = capture_error([&] {
    save_safetensors(path, std::vector<NamedTensor>{{"w", {DType::F32, {17}, w}}});
  });
  EXPECT_EQ(refused.code, ErrorCode::InvalidArgument);
  EXPECT_EQ(testing::read_file(path), before);
  EXPECT_EQ(entries_in(dir.path()), 1u);
  // A folder that does not exist.
  const auto missing = capture_error([&] {
    save_safetensors(dir / "no" / "such" / "m.safetensors",
                     std::vector<NamedTensor>{{"w", {DType::F32, {16}, w}}});
  });
  EXPECT_TRUE(missing.threw);
  EXPECT_EQ(missing.code, ErrorCode::NotFound) << missing.message;
  EXPECT_NE(missing.message.find("m.safetensors"), std::string::npos) << missing.message;
  EXPECT_EQ(entries_in(dir.path()), 1u);
}

TEST(SafetensorsRewrite, UnsyncedSaveProducesTheSameBytes) {
  TempDir dir;
  const auto w = random_bytes(40, 5);
  const std::vector<NamedTensor> t = {{"w", {DType::I64, {5}, w}}};
  SafetensorsWriteOptions fast;
  fast.sync = false;
  save_safetensors(dir / "a.safetensors", t);
  save_safetensors(dir / "b.safetensors", t, fast);
  EXPECT_EQ(testing::read_file(dir / "a.safetensors"), testing::read_file(dir / "b.safetensors"));
  EXPECT_EQ(entries_in(dir.path()), 2u);
}

TEST(SafetensorsRewrite, RelativePathInTheCurrentFolder) {
  TempDir dir;
  const fs::path previous = fs::current_path();
  fs::current_path(dir.path());
  const auto w = random_bytes(8, 6);
  const auto thrown = capture_error([&] {
    save_safetensors("relative.safetensors", std::vector<NamedTensor>{{"w", {DType::U8, {8}, w}}});
    const SafetensorsReader r = SafetensorsReader::open("relative.safetensors");
    EXPECT_TRUE(same_bytes(r.tensor("w").bytes(), w));
  });
  fs::current_path(previous);
  EXPECT_FALSE(thrown.threw) << thrown.message;
  EXPECT_TRUE(fs::exists(dir / "relative.safetensors"));
  EXPECT_EQ(entries_in(dir.path()), 1u);
}

}  // namespace
}  // namespace ckptio
