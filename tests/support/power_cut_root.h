// A scratch folder for power-cut loops. The power-cut model decides what survives, so the disk
// under it only costs time: on ext4 a replace-by-rename flushes data (auto_da_alloc) and a loop
// that replays a save hundreds of times waits on the disk. The folder goes to /dev/shm (tmpfs)
// when there is one, else to $TMPDIR like testing::TempDir.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include <unistd.h>

namespace ckptio::testing {

class PowerCutRoot {
 public:
  PowerCutRoot() : PowerCutRoot(default_base()) {}
  // Under `base` instead, for tests that need a real disk (O_DIRECT has no tmpfs).
  explicit PowerCutRoot(const std::filesystem::path& base) {
    namespace fs = std::filesystem;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "ckptio";
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    std::random_device rd;
    path_ = base / ("ckptio-powercut-" + name + "-" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~PowerCutRoot() {
    if (std::getenv("CKPTIO_KEEP_TEST_DIRS") == nullptr) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  PowerCutRoot(const PowerCutRoot&) = delete;
  PowerCutRoot& operator=(const PowerCutRoot&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  static std::filesystem::path default_base() {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path shm = "/dev/shm";
    if (fs::is_directory(shm, ec) && ::access(shm.c_str(), W_OK) == 0) return shm;
    return fs::temp_directory_path();
  }

  std::filesystem::path path_;
};

}  // namespace ckptio::testing
