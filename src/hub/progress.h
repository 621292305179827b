// One progress line on stderr for a batch of downloads ("org/name: 45% 12.3/27.0 MB").
// Thread-safe; redraws at most every 100 ms; draws nothing when disabled.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace ckptio::hub {

class Progress {
 public:
  Progress(bool enabled, std::string label, std::FILE* out = stderr);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add_total(uint64_t bytes);
  void advance(uint64_t bytes);
  // Bytes counted twice after a restart from zero are taken back.
  void retreat(uint64_t bytes);
  // Draws the final line and a newline (once, only if anything was drawn or counted).
  void finish();

 private:
  void draw_locked(bool final);

  bool enabled_;
  std::string label_;
  std::FILE* out_;
  std::mutex mu_;
  uint64_t total_ = 0;
  uint64_t done_ = 0;
  bool drawn_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace ckptio::hub
