// resolve_checkpoint_source looks at the filesystem only through the Env it is given, symlinks
// included: here an Env that shows a real folder under a prefix that does not exist on disk, so
// any probe that bypassed the Env would find nothing.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/load.h"
#include "ckptio/safetensors.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Every call goes to the POSIX Env with `prefix` replaced by `root`.
class PrefixEnv final : public io::Env {
 public:
  PrefixEnv(fs::path prefix, fs::path root) : prefix_(std::move(prefix)), root_(std::move(root)) {}

  std::unique_ptr<io::ReadableFile> open_read(const fs::path& p) override {
    return base().open_read(map(p));
  }
  std::unique_ptr<io::WritableFile> open_write(const fs::path& p, io::OpenMode m) override {
    return base().open_write(map(p), m);
  }
  std::shared_ptr<const io::MappedFile> map_read(const fs::path& p) override {
    return base().map_read(map(p));
  }
  void rename(const fs::path& a, const fs::path& b) override { base().rename(map(a), map(b)); }
  void sync_dir(const fs::path& d) override { base().sync_dir(map(d)); }
  void remove(const fs::path& p) override { base().remove(map(p)); }
  void remove_all(const fs::path& p) override { base().remove_all(map(p)); }
  void create_dirs(const fs::path& p) override { base().create_dirs(map(p)); }
  std::vector<std::string> list_dir(const fs::path& d) override { return base().list_dir(map(d)); }
  io::FileInfo stat(const fs::path& p) override { return base().stat(map(p)); }

 private:
  static io::Env& base() { return io::Env::posix(); }
  fs::path map(const fs::path& p) const {
    const fs::path rel = p.lexically_relative(prefix_);
    if (rel.empty() || *rel.begin() == "..") return p;
    return rel == "." ? root_ : root_ / rel;
  }
  fs::path prefix_, root_;
};

void write_weights(const fs::path& file, const std::vector<float>& values) {
  fs::create_directories(file.parent_path());
  const Shape shape{static_cast<int64_t>(values.size())};
  const NamedTensor t{"w", {DType::F32, shape, std::as_bytes(std::span(values))}};
  save_safetensors(file, std::span(&t, 1));
}

class ResolveThroughEnv : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(fs::exists(prefix_)); }

  SourceOptions options() {
    SourceOptions o;
    o.env = &env_;
    return o;
  }

  TempDir tmp_;
  const fs::path prefix_ = "/ckptio-resolve-env-test-not-on-disk";
  PrefixEnv env_{prefix_, tmp_.path()};
};

TEST_F(ResolveThroughEnv, SymlinkToAFolderIsAFolder) {
  write_weights(tmp_.path() / "real" / "model.safetensors", {1, 2});
  fs::create_directory_symlink("real", tmp_.path() / "link");
  const ResolvedSource r = resolve_checkpoint_source(prefix_ / "link", options());
  EXPECT_EQ(r.kind, SourceKind::SafetensorsFile);
  EXPECT_EQ(r.path, prefix_ / "link" / "model.safetensors");

  LoadOptions lo;
  lo.source = options();
  const LoadedCheckpoint ck = load_checkpoint(prefix_ / "link", lo);
  std::vector<float> w(2);
  std::memcpy(w.data(), ck.tensors.at("w").bytes().data(), 8);
  EXPECT_EQ(w, (std::vector<float>{1, 2}));
}

TEST_F(ResolveThroughEnv, SymlinkedEmaFolderOfATrainingCheckpoint) {
  write_weights(tmp_.path() / "ema-store" / "model.safetensors", {3});
  write_weights(tmp_.path() / "ckpt" / "model" / "model.safetensors", {4});
  fs::create_directory_symlink("../ema-store", tmp_.path() / "ckpt" / "ema");
  const ResolvedSource r = resolve_checkpoint_source(prefix_ / "ckpt", options());
  EXPECT_EQ(r.path, prefix_ / "ckpt" / "ema" / "model.safetensors") << r.how;
  EXPECT_EQ(resolve_checkpoint_source(prefix_ / "ckpt" / "ema", options()).path,
            prefix_ / "ckpt" / "ema" / "model.safetensors");
}

TEST_F(ResolveThroughEnv, SymlinkToAFileIsAFile) {
  write_weights(tmp_.path() / "weights.safetensors", {5});
  fs::create_symlink("weights.safetensors", tmp_.path() / "current");
  const ResolvedSource r = resolve_checkpoint_source(prefix_ / "current", options());
  EXPECT_EQ(r.kind, SourceKind::SafetensorsFile);
  EXPECT_EQ(r.path, prefix_ / "current");
  EXPECT_EQ(r.how, "safetensors file (by content)");
}

TEST_F(ResolveThroughEnv, MissingPathIsNotFound) {
  try {
    (void)resolve_checkpoint_source(prefix_ / "absent", options());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound) << e.what();
  }
}

}  // namespace
}  // namespace ckptio
