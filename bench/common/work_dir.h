// A scratch folder under --dir for one benchmark run, removed (with everything in it) at the end.
#pragma once

#include <filesystem>
#include <string>

namespace ckptio::bench {

class WorkDir {
 public:
  WorkDir(const std::filesystem::path& parent, const std::string& prefix);
  ~WorkDir();
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::filesystem::path& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Incompressible bytes (xorshift), so that every page is written and nothing compresses.
void fill_pseudo_random(std::byte* p, size_t n, uint64_t seed);

}  // namespace ckptio::bench
