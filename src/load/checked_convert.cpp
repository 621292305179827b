#include "load/checked_convert.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ckptio/error.h"

namespace ckptio::detail {
namespace {

bool same_value(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::memcmp(&a, &b, sizeof a) == 0;  // tells -0 from +0
}

// Every source type narrower than F32 has at most 2^16 bit patterns: instead of a hand-written
// table of exponent ranges and mantissa widths (and the F8 variants' missing infinities and
// negative zeros), try them all once.
bool every_value_survives(DType from, DType to) {
  const int bits = dtype_bits(from);
  const size_t count = size_t{1} << bits;
  const size_t width = static_cast<size_t>(bits) / 8;
  std::vector<uint8_t> patterns(count * width);
  for (size_t i = 0; i < count; ++i) std::memcpy(&patterns[i * width], &i, width);  // little-endian
  std::vector<double> direct(count);
  convert_elements(from, patterns.data(), DType::F64, direct.data(), count);
  std::vector<uint8_t> converted(count * static_cast<size_t>(dtype_bits(to)) / 8);
  convert_elements(from, patterns.data(), to, converted.data(), count);
  std::vector<double> back(count);
  convert_elements(to, converted.data(), DType::F64, back.data(), count);
  for (size_t i = 0; i < count; ++i) {
    if (!same_value(direct[i], back[i])) return false;
  }
  return true;
}

}  // namespace

bool is_widening(DType from, DType to) {
  if (from == to) return true;
  if (!can_convert(from, to)) return false;
  if (from == DType::F64) return false;
  if (from == DType::F32) return to == DType::F64;
  // 0 unknown, 1 widening, 2 not. Two threads may both compute a pair; they agree.
  static std::array<std::atomic<uint8_t>, kDTypeCount * kDTypeCount> known{};
  std::atomic<uint8_t>& slot = known[static_cast<size_t>(from) * kDTypeCount + static_cast<size_t>(to)];
  uint8_t v = slot.load(std::memory_order_acquire);
  if (v == 0) {
    v = every_value_survives(from, to) ? 1 : 2;
    slot.store(v, std::memory_order_release);
  }
  return v == 1;
}

void convert_checked(DType from, const void* src, DType to, void* dst, size_t count,
                     std::string_view tensor, bool allow_overflow) {
  if (count == 0) return;
  convert_elements(from, src, to, dst, count);
  if (allow_overflow || is_widening(from, to)) return;
  constexpr size_t kChunk = 4096;
  const size_t src_width = static_cast<size_t>(dtype_bits(from)) / 8;
  const size_t dst_width = static_cast<size_t>(dtype_bits(to)) / 8;
  std::vector<double> a(kChunk);
  std::vector<double> b(kChunk);
  for (size_t start = 0; start < count; start += kChunk) {
    const size_t n = std::min(kChunk, count - start);
    convert_elements(from, static_cast<const uint8_t*>(src) + start * src_width, DType::F64, a.data(), n);
    convert_elements(to, static_cast<const uint8_t*>(dst) + start * dst_width, DType::F64, b.data(), n);
    for (size_t i = 0; i < n; ++i) {
      if (std::isfinite(a[i]) && !std::isfinite(b[i])) {
        char value[64];
        std::snprintf(value, sizeof value, "%.9g", a[i]);
        throw Error(ErrorCode::Mismatch,
                    "tensor '" + std::string(tensor) + "': element " + std::to_string(start + i) +
                        " (" + value + ") is out of the range of " + std::string(dtype_name(to)) +
                        " and would become " + (std::isnan(b[i]) ? "NaN" : "infinite") +
                        " (allow_overflow accepts that)");
      }
    }
  }
}

}  // namespace ckptio::detail
