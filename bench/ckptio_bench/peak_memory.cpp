#include "ckptio_bench/peak_memory.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace ckptio::bench {

namespace {
long status_kib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::atol(line.c_str() + std::strlen(key));
  }
  return -1;
}
}  // namespace

std::optional<double> peak_extra_mib(const std::function<void()>& fn) {
  {
    std::ofstream c("/proc/self/clear_refs");
    if (!c) return std::nullopt;
    c << "5\n";
    c.flush();
    if (!c) return std::nullopt;
  }
  const long before = status_kib("VmRSS:");
  fn();
  const long peak = status_kib("VmHWM:");
  if (before < 0 || peak < 0) return std::nullopt;
  return static_cast<double>(std::max(0L, peak - before)) / 1024.0;
}

}  // namespace ckptio::bench
