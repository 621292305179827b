// A reader opens its file once: the mapping and the preads see the same inode, even when the file
// is replaced (an atomic save of a new version) while the reader is opening it.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "ckptio/io.h"
#include "ckptio/safetensors.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;

// Forwards to POSIX; just before its second open of `watched` by path, renames `replacement` over
// it, as a concurrent writer's atomic save would.
class ReplacingEnv final : public io::Env {
 public:
  ReplacingEnv(fs::path watched, fs::path replacement)
      : watched_(std::move(watched)), replacement_(std::move(replacement)) {}
  int opens = 0;

  std::unique_ptr<io::ReadableFile> open_read(const fs::path& path) override {
    before_open(path);
    return base().open_read(path);
  }
  std::shared_ptr<const io::MappedFile> map_read(const fs::path& path) override {
    before_open(path);
    return base().map_read(path);
  }
  std::unique_ptr<io::WritableFile> open_write(const fs::path& path, io::OpenMode mode) override {
    return base().open_write(path, mode);
  }
  void rename(const fs::path& from, const fs::path& to) override { base().rename(from, to); }
  void sync_dir(const fs::path& dir) override { base().sync_dir(dir); }
  void remove(const fs::path& path) override { base().remove(path); }
  void remove_all(const fs::path& path) override { base().remove_all(path); }
  void create_dirs(const fs::path& path) override { base().create_dirs(path); }
  std::vector<std::string> list_dir(const fs::path& dir) override { return base().list_dir(dir); }
  io::FileInfo stat(const fs::path& path) override { return base().stat(path); }

 private:
  static io::Env& base() { return io::Env::posix(); }
  void before_open(const fs::path& path) {
    if (path != watched_) return;
    if (++opens == 2) fs::rename(replacement_, watched_);
  }
  fs::path watched_;
  fs::path replacement_;
};

std::string bytes_of(const Tensor& t) {
  return {reinterpret_cast<const char*>(t.bytes().data()), t.nbytes()};
}

void save_f32(const fs::path& path, const std::vector<std::pair<std::string, std::vector<float>>>& tensors) {
  std::vector<Tensor> storage;
  std::vector<NamedTensor> named;
  storage.reserve(tensors.size());
  for (const auto& [name, values] : tensors) {
    storage.push_back(Tensor::empty(DType::F32, {static_cast<int64_t>(values.size())}));
    std::memcpy(storage.back().mutable_bytes().data(), values.data(), values.size() * 4);
    named.push_back({name, storage.back().view()});
  }
  SafetensorsWriteOptions o;
  o.sync = false;
  save_safetensors(path, named, o);
}

TEST(SafetensorsOneOpen, AFileReplacedWhileOpeningIsNotMixedWithItsSuccessor) {
  testing::TempDir dir;
  const fs::path path = dir / "model.safetensors";
  // Old and new differ in values and layout: "a" is 4 elements then 2.
  save_f32(path, {{"a", {1, 2, 3, 4}}, {"b", {5, 6}}});
  const std::string old_bytes = testing::read_file(path);
  save_f32(dir / "next.safetensors", {{"a", {7, 8}}, {"b", {9, 10, 11, 12}}});

  ReplacingEnv env(path, dir / "next.safetensors");
  const SafetensorsReader reader = SafetensorsReader::open(path, {.env = &env});
  EXPECT_EQ(env.opens, 1) << "the path was opened again after the first open";
  // The header, the mapped views and the preads all come from the file as it was at the open.
  EXPECT_EQ(reader.info("a").shape, Shape{4});
  const std::vector<Tensor> read = reader.read_all_owned();
  ASSERT_EQ(read.size(), 2u);
  for (size_t i = 0; i < read.size(); ++i) {
    const std::string& name = reader.tensors()[i].name;
    EXPECT_EQ(bytes_of(read[i]), bytes_of(reader.tensor(name)))
        << name << ": the preads and the mapping read different files";
  }
  const float a[4] = {1, 2, 3, 4};
  EXPECT_EQ(bytes_of(reader.tensor("a")), std::string(reinterpret_cast<const char*>(a), 16));
  EXPECT_EQ(reader.file_size(), old_bytes.size());
}

}  // namespace
}  // namespace ckptio
