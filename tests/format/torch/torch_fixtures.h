// The .pt fixtures of the torchfile tests: made once per build folder by make_fixtures.py with
// the system PyTorch (ctest runs each test case in its own process, so they are shared, guarded by
// a lock and a stamp), and the comparison of a loaded file with PyTorch's own manifest.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "ckptio/torch_pickle.h"
#include "support/test_util.h"

namespace ckptio::testing {

namespace fs = std::filesystem;

// The folder holding the fixtures, or an empty path when the system Python has no torch. The
// stamp also records "no torch", so that each test process does not pay for importing torch.
inline fs::path torch_fixture_dir() {
  static const fs::path dir = [] {
    const fs::path script = fs::path(CKPTIO_SOURCE_DIR) / "tests/format/torch/make_fixtures.py";
    const std::string stamp_text = std::to_string(fs::file_size(script)) + ":" +
                                   std::to_string(fs::last_write_time(script).time_since_epoch().count());
    const fs::path root = fs::path(CKPTIO_BIN_DIR) / "torchfile-fixtures";
    fs::create_directories(root);
    const int lock = ::open((root / "lock").c_str(), O_CREAT | O_RDWR, 0644);
    ::flock(lock, LOCK_EX);
    const fs::path out = root / "current";
    std::string stamp = read_file(root / "stamp");
    if (stamp != stamp_text && stamp != "no-torch:" + stamp_text) {
      std::error_code ec;
      fs::remove_all(out, ec);
      if (!python_has_torch()) {
        stamp = "no-torch:" + stamp_text;
      } else {
        fs::create_directories(out);
        const std::string cmd = std::string(system_python()) + " " + script.string() + " " +
                                out.string() + " >" + (root / "make_fixtures.log").string() + " 2>&1";
        stamp = std::system(cmd.c_str()) == 0 ? stamp_text : "";
      }
      write_file(root / "stamp", stamp);
    }
    ::flock(lock, LOCK_UN);
    ::close(lock);
    return stamp.rfind("no-torch:", 0) == 0 ? fs::path() : out;
  }();
  return dir;
}

#define CKPTIO_NEED_TORCH_FIXTURES()                                                 \
  const ::std::filesystem::path fixtures = ::ckptio::testing::torch_fixture_dir();   \
  if (fixtures.empty()) GTEST_SKIP() << "/usr/bin/python3 has no torch";            \
  ASSERT_TRUE(::std::filesystem::exists(fixtures / "model.pt"))                      \
      << "make_fixtures.py failed; see " << fixtures.parent_path() / "make_fixtures.log"

inline nlohmann::json read_manifest(const fs::path& dir, const std::string& name) {
  return nlohmann::json::parse(read_file(dir / (name + ".manifest.json")));
}

// Compares every leaf of `root` with what PyTorch had in memory: names, dtypes, shapes, bytes (bit
// for bit), storage offsets and strides, storage sharing, parameter flags, non-tensor values.
inline void expect_matches_manifest(const pt::Value& root, const fs::path& dir,
                                    const std::string& name) {
  const nlohmann::json manifest = read_manifest(dir, name);
  const std::string blob = read_file(dir / (name + ".bytes"));
  const auto leaves = pt::flatten(root);
  ASSERT_EQ(leaves.size(), manifest.size()) << name;
  std::map<std::string, const pt::Value*> by_name;
  for (const auto& leaf : leaves) by_name[leaf.name] = leaf.value;
  for (const auto& entry : manifest) {
    const std::string leaf_name = entry["name"];
    SCOPED_TRACE(name + ": " + leaf_name);
    ASSERT_TRUE(by_name.count(leaf_name)) << "missing leaf";
    const pt::Value& v = *by_name[leaf_name];
    if (entry["kind"] == "value") {
      ASSERT_FALSE(v.is_tensor());
      EXPECT_EQ(nlohmann::json::parse(pt::value_to_json(v)), entry["json"]);
      continue;
    }
    ASSERT_TRUE(v.is_tensor());
    const pt::TorchTensor& t = v.as_tensor();
    EXPECT_EQ(dtype_name(t.dtype), entry["dtype"].get<std::string>());
    EXPECT_EQ(t.sizes, entry["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.strides, entry["stride"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.storage_offset, entry["storage_offset"].get<int64_t>());
    EXPECT_EQ(t.is_contiguous(), entry["contiguous"].get<bool>());
    EXPECT_EQ(t.is_parameter, entry["parameter"].get<bool>());
    EXPECT_EQ(t.requires_grad, entry["requires_grad"].get<bool>());
    const Tensor c = t.contiguous();
    const std::string_view want(blob.data() + entry["offset"].get<size_t>(), entry["nbytes"].get<size_t>());
    ASSERT_EQ(c.nbytes(), want.size());
    EXPECT_EQ(std::memcmp(c.bytes().data(), want.data(), want.size()), 0) << "bytes differ";
    const Tensor owned = t.to_owned();
    EXPECT_EQ(std::memcmp(owned.bytes().data(), want.data(), want.size()), 0);
    // Storage sharing: same PyTorch storage <=> same TorchStorage object.
    const uint64_t storage = entry["storage"];
    if (storage == 0 || entry["nbytes"] == 0) continue;
    for (const auto& other : manifest) {
      if (other["kind"] != "tensor" || other["name"] == leaf_name || other["nbytes"] == 0) continue;
      const bool same = other["storage"].get<uint64_t>() == storage;
      EXPECT_EQ(t.shares_storage_with(by_name[other["name"]]->as_tensor()), same)
          << "sharing with " << other["name"];
    }
  }
}

}  // namespace ckptio::testing
