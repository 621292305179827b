// Crash-safe replacement of one file: temp name in the same folder, write, fsync, rename, fsync
// the folder. A crash at any point leaves either the old file or the new one under `path`.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>

#include "ckptio/error.h"
#include "ckptio/io.h"

namespace ckptio::io {

std::string random_suffix() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   static_cast<uint64_t>(::getpid()) << 32 ^
                                   static_cast<uint64_t>(
                                       std::chrono::steady_clock::now().time_since_epoch().count()));
  const uint64_t v = rng() ^ (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull);
  static constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string s;
  uint64_t x = v;
  for (int i = 0; i < 10; ++i) {
    s += kDigits[x % 36];
    x /= 36;
  }
  return s;
}

bool is_temp_name(std::string_view name) {
  return name.size() > 1 && name.front() == '.' && name.find(".tmp-") != std::string_view::npos;
}

void write_file_atomic(Env& env, const fs::path& path,
                       const std::function<void(WritableFile&)>& fill,
                       const AtomicWriteOptions& options) {
  const fs::path temp = options.temp.empty() ? temp_path_for(path) : options.temp;
  try {
    auto file = env.open_write(temp, OpenMode::CreateNew);
    fill(*file);
    if (options.sync) file->sync();
    file->close();
    env.rename(temp, path);
  } catch (...) {
    try {
      env.remove(temp);
    } catch (...) {
      // The original error matters more; a leftover temp name is cleaned by its owner later.
    }
    throw;
  }
  if (options.sync) env.sync_dir(temp.parent_path());
}

void write_file_atomic(Env& env, const fs::path& path, std::string_view contents,
                       const AtomicWriteOptions& options) {
  write_file_atomic(
      env, path,
      [&](WritableFile& f) { f.write_at(0, std::as_bytes(std::span(contents.data(), contents.size()))); },
      options);
}

void create_dirs_synced(Env& env, const fs::path& dir) {
  std::vector<fs::path> created;  // deepest first
  for (fs::path p = dir; !p.empty() && !env.stat(p).exists; p = p.parent_path()) {
    created.push_back(p);
    if (p == p.parent_path()) break;
  }
  if (created.empty()) return;
  env.create_dirs(dir);
  for (const auto& p : created) env.sync_dir(p.has_parent_path() ? p.parent_path() : fs::path("."));
}

std::string read_small_file(Env& env, const fs::path& path, uint64_t max_bytes) {
  auto file = env.open_read(path);
  if (file->size() > max_bytes) {
    throw Error(ErrorCode::Corrupt, "'" + path.string() + "' is " + std::to_string(file->size()) +
                                        " bytes, more than the " + std::to_string(max_bytes) +
                                        " allowed for this kind of file");
  }
  std::string s(static_cast<size_t>(file->size()), '\0');
  file->read_exact(0, std::as_writable_bytes(std::span(s.data(), s.size())));
  return s;
}

}  // namespace ckptio::io
