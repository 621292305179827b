#include "common/work_dir.h"

#include <cstdint>
#include <cstring>
#include <system_error>

#include "ckptio/io.h"

namespace ckptio::bench {

WorkDir::WorkDir(const std::filesystem::path& parent, const std::string& prefix)
    : path_(parent / (prefix + io::random_suffix())) {
  std::filesystem::create_directories(path_);
}

WorkDir::~WorkDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void fill_pseudo_random(std::byte* p, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<std::byte>(i);
}

}  // namespace ckptio::bench
