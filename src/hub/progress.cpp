// The progress line: percentage, bytes and rate, rewritten in place with "\r".
#include "hub/progress.h"

#include <algorithm>

namespace ckptio::hub {

Progress::Progress(bool enabled, std::string label, std::FILE* out)
    : enabled_(enabled), label_(std::move(label)), out_(out),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

void Progress::add_total(uint64_t bytes) {
  if (!enabled_) return;
  std::lock_guard lock(mu_);
  total_ += bytes;
}

void Progress::advance(uint64_t bytes) {
  if (!enabled_) return;
  std::lock_guard lock(mu_);
  done_ += bytes;
  draw_locked(false);
}

void Progress::retreat(uint64_t bytes) {
  if (!enabled_) return;
  std::lock_guard lock(mu_);
  done_ -= std::min(done_, bytes);
}

void Progress::finish() {
  if (!enabled_) return;
  std::lock_guard lock(mu_);
  if (finished_ || (!drawn_ && done_ == 0)) return;
  draw_locked(true);
  std::fputc('\n', out_);
  std::fflush(out_);
  finished_ = true;
}

void Progress::draw_locked(bool final) {
  const auto now = std::chrono::steady_clock::now();
  if (!final && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  drawn_ = true;
  const double seconds = std::max(1e-3, std::chrono::duration<double>(now - start_).count());
  const double mb = 1e6;
  const int percent = total_ > 0 ? static_cast<int>(std::min<uint64_t>(100, done_ * 100 / total_)) : 0;
  constexpr int kWidth = 24;
  const int filled = percent * kWidth / 100;
  std::fprintf(out_, "\r%s: %3d%% [%.*s%*s] %.1f/%.1f MB %.1f MB/s", label_.c_str(), percent,
               filled, "########################", kWidth - filled, "",
               static_cast<double>(done_) / mb, static_cast<double>(total_) / mb,
               static_cast<double>(done_) / mb / seconds);
  std::fflush(out_);
}

}  // namespace ckptio::hub
