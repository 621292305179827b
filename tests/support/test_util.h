// Shared test helpers: a private temp folder per test, file helpers, and running the system
// Python (which has PyTorch) to make fixtures at test time.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

namespace ckptio::testing {

namespace fs = std::filesystem;

// A fresh folder under $TMPDIR, removed at the end of the test unless CKPTIO_KEEP_TEST_DIRS is set.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "ckptio";
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("ckptio-test-" + name + "-" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    if (std::getenv("CKPTIO_KEEP_TEST_DIRS") == nullptr) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_file(const fs::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The Debian Python that has python3-torch; tests that need it skip when it is absent.
inline const char* system_python() { return "/usr/bin/python3"; }

inline bool python_has_torch() {
  static const bool ok =
      std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
  return ok;
}

// Runs `/usr/bin/python3 script args...` (script is Python source written to a temp file);
// returns the exit status. stdout/stderr go to the test log.
inline int run_python(const fs::path& workdir, const std::string& script,
                      const std::string& args = "") {
  const fs::path file = workdir / "fixture_script.py";
  write_file(file, script);
  const std::string cmd = std::string(system_python()) + " " + file.string() + " " + args;
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

}  // namespace ckptio::testing
