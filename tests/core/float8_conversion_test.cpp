// The five F8 formats: all 256 encodings of each decoded against a decoder written here from the
// formats' definitions (PyTorch 1.13 has no float8), decode->encode identity, ties to even at
// every midpoint, overflow, and the F8 paths of convert_elements.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "ckptio/dtype.h"

namespace ckptio {
namespace {

// A definition of an 8-bit float format, as written in the OCP FP8 / MX specifications and the
// "FNUZ" (finite, no negative zero) variants.
struct F8Definition {
  DType dtype;
  const char* name;
  int exponent_bits;  // 8 for E8M0, which has neither sign nor mantissa
  int mantissa_bits;
  int bias;
  enum class Specials { Ieee, FiniteNanAllOnes, FiniteNanIsNegZero, ExponentOnly } specials;
  double max_finite;
};

const F8Definition kFormats[] = {
    {DType::F8_E4M3, "E4M3", 4, 3, 7, F8Definition::Specials::FiniteNanAllOnes, 448.0},
    {DType::F8_E5M2, "E5M2", 5, 2, 15, F8Definition::Specials::Ieee, 57344.0},
    {DType::F8_E8M0, "E8M0", 8, 0, 127, F8Definition::Specials::ExponentOnly, 0x1p127},
    {DType::F8_E4M3FNUZ, "E4M3FNUZ", 4, 3, 8, F8Definition::Specials::FiniteNanIsNegZero, 240.0},
    {DType::F8_E5M2FNUZ, "E5M2FNUZ", 5, 2, 16, F8Definition::Specials::FiniteNanIsNegZero,
     57344.0},
};

bool definition_is_nan(const F8Definition& f, uint8_t b) {
  using S = F8Definition::Specials;
  const int exp_max = (1 << f.exponent_bits) - 1;
  const int exp = (b >> f.mantissa_bits) & exp_max;
  const int man = b & ((1 << f.mantissa_bits) - 1);
  switch (f.specials) {
    case S::Ieee: return exp == exp_max && man != 0;
    case S::FiniteNanAllOnes: return (b & 0x7F) == 0x7F;
    case S::FiniteNanIsNegZero: return b == 0x80;
    case S::ExponentOnly: return b == 0xFF;
  }
  return false;
}

// Value of an encoding from the definition: (-1)^s * 2^(e - bias) * 1.m, or 2^(1 - bias) * 0.m
// for a zero exponent field; IEEE-style formats spell infinity with an all-ones exponent.
double definition_value(const F8Definition& f, uint8_t b) {
  if (definition_is_nan(f, b)) return std::nan("");
  if (f.specials == F8Definition::Specials::ExponentOnly) return std::pow(2.0, b - f.bias);
  const bool negative = (b & 0x80) != 0;
  const int exp_max = (1 << f.exponent_bits) - 1;
  const int exp = (b >> f.mantissa_bits) & exp_max;
  const int man = b & ((1 << f.mantissa_bits) - 1);
  const double fraction = static_cast<double>(man) / (1 << f.mantissa_bits);
  double magnitude;
  if (f.specials == F8Definition::Specials::Ieee && exp == exp_max) {
    magnitude = std::numeric_limits<double>::infinity();
  } else if (exp == 0) {
    magnitude = std::pow(2.0, 1 - f.bias) * fraction;
  } else {
    magnitude = std::pow(2.0, exp - f.bias) * (1.0 + fraction);
  }
  return negative ? -magnitude : magnitude;
}

std::string hex(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", v);
  return buf;
}

void PrintTo(const F8Definition& f, std::ostream* os) { *os << f.name; }

class F8Formats : public ::testing::TestWithParam<F8Definition> {};

TEST_P(F8Formats, DefinitionAnchors) {
  // Guards the test's own decoder against a mistake shared with the library.
  const F8Definition& f = GetParam();
  double max_seen = 0;
  for (int b = 0; b < 256; ++b) {
    const double v = definition_value(f, static_cast<uint8_t>(b));
    if (std::isfinite(v)) max_seen = std::max(max_seen, v);
  }
  EXPECT_EQ(max_seen, f.max_finite);
}

TEST_P(F8Formats, DecodeAll256MatchesTheDefinition) {
  const F8Definition& f = GetParam();
  std::vector<uint8_t> all(256);
  for (int b = 0; b < 256; ++b) all[b] = static_cast<uint8_t>(b);
  std::vector<float> bulk32(256);
  std::vector<double> bulk64(256);
  convert_elements(f.dtype, all.data(), DType::F32, bulk32.data(), 256);
  convert_elements(f.dtype, all.data(), DType::F64, bulk64.data(), 256);
  for (int b = 0; b < 256; ++b) {
    const double want = definition_value(f, static_cast<uint8_t>(b));
    const float got = f8_to_f32(f.dtype, static_cast<uint8_t>(b));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << f.name << " " << hex(b) << " -> " << got;
      EXPECT_TRUE(std::isnan(bulk32[b]) && std::isnan(bulk64[b])) << f.name << " " << hex(b);
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << f.name << " " << hex(b);
      EXPECT_EQ(std::signbit(got), std::signbit(want)) << f.name << " " << hex(b);
      EXPECT_EQ(static_cast<double>(bulk32[b]), want) << f.name << " " << hex(b);
      EXPECT_EQ(bulk64[b], want) << f.name << " " << hex(b);
    }
  }
}

TEST_P(F8Formats, DecodeThenEncodeIsIdentityAndNaNIsCanonical) {
  const F8Definition& f = GetParam();
  std::set<uint8_t> nan_encodings;
  for (int b = 0; b < 256; ++b) {
    const uint8_t back = f32_to_f8(f.dtype, f8_to_f32(f.dtype, static_cast<uint8_t>(b)));
    if (definition_is_nan(f, static_cast<uint8_t>(b))) {
      EXPECT_TRUE(definition_is_nan(f, back)) << f.name << " NaN " << hex(b) << " -> " << hex(back);
      nan_encodings.insert(back);
    } else {
      EXPECT_EQ(back, b) << f.name << " " << hex(b) << " -> " << hex(back);
    }
  }
  nan_encodings.insert(f32_to_f8(f.dtype, std::nanf("")));
  nan_encodings.insert(f32_to_f8(f.dtype, -std::nanf("")));
  nan_encodings.insert(f32_to_f8(f.dtype, std::bit_cast<float>(0x7F800001u)));
  EXPECT_EQ(nan_encodings.size(), 1u) << f.name << ": NaN has more than one output encoding";
}

// Finite encodings in increasing value order on one side of zero.
std::vector<uint8_t> finite_ascending(const F8Definition& f, bool negative_side) {
  std::vector<std::pair<double, uint8_t>> v;
  for (int b = 0; b < 256; ++b) {
    const double x = definition_value(f, static_cast<uint8_t>(b));
    if (!std::isfinite(x) || std::signbit(x) != negative_side) continue;
    v.push_back({std::fabs(x), static_cast<uint8_t>(b)});
  }
  std::sort(v.begin(), v.end());
  std::vector<uint8_t> out;
  for (auto& [x, b] : v) out.push_back(b);
  return out;
}

TEST_P(F8Formats, EveryMidpointRoundsToEvenAndNeighboursToNearest) {
  const F8Definition& f = GetParam();
  int checked = 0;
  for (bool negative : {false, true}) {
    if (negative && f.specials == F8Definition::Specials::ExponentOnly) continue;
    const auto order = finite_ascending(f, negative);
    for (size_t i = 0; i + 1 < order.size(); ++i) {
      const uint8_t lo = order[i], hi = order[i + 1];
      const double a = definition_value(f, lo), b = definition_value(f, hi);
      const double mid = (a + b) / 2;
      const auto mid_f = static_cast<float>(mid);
      ASSERT_EQ(static_cast<double>(mid_f), mid) << "midpoint not exact in F32";
      // The tie goes to the encoding whose lowest bit is 0 (the even mantissa or, for E8M0, the
      // even exponent). For the FNUZ formats, ±0 is the single encoding 0x00.
      const uint8_t even = (lo & 1) == 0 ? lo : hi;
      EXPECT_EQ(f32_to_f8(f.dtype, mid_f), even) << f.name << " midpoint " << mid << " of "
                                                 << hex(lo) << "/" << hex(hi);
      const float toward_lo = std::nextafter(mid_f, static_cast<float>(a));
      const float toward_hi = std::nextafter(mid_f, static_cast<float>(b));
      EXPECT_EQ(f32_to_f8(f.dtype, toward_lo), lo) << f.name << " just past midpoint " << mid;
      EXPECT_EQ(f32_to_f8(f.dtype, toward_hi), hi) << f.name << " just past midpoint " << mid;
      checked += 3;
    }
  }
  EXPECT_GT(checked, 3 * 200);
}

TEST_P(F8Formats, OverflowInfinityAndZero) {
  const F8Definition& f = GetParam();
  using S = F8Definition::Specials;
  const float inf = std::numeric_limits<float>::infinity();
  // The midpoint between the largest finite value and the next step of its binade (for E8M0,
  // whose steps are powers of two, between 2^127 and 2^128).
  const double step = std::ldexp(1.0, std::ilogb(f.max_finite) - f.mantissa_bits);
  const double overflow_mid = f.max_finite + step / 2;
  const uint8_t max_byte = f32_to_f8(f.dtype, static_cast<float>(f.max_finite));
  EXPECT_EQ(definition_value(f, max_byte), f.max_finite) << f.name;
  const uint8_t at_mid = f32_to_f8(f.dtype, static_cast<float>(overflow_mid));
  const uint8_t past_mid =
      f32_to_f8(f.dtype, std::nextafter(static_cast<float>(overflow_mid), inf));
  const uint8_t below_mid =
      f32_to_f8(f.dtype, std::nextafter(static_cast<float>(overflow_mid), 0.0f));
  EXPECT_EQ(below_mid, max_byte) << f.name << " " << overflow_mid;
  switch (f.specials) {
    case S::Ieee:  // E5M2: the tie goes to the even encoding, which is infinity (0x7C)
      EXPECT_EQ(at_mid, 0x7C) << f.name;
      EXPECT_EQ(past_mid, 0x7C);
      EXPECT_EQ(f32_to_f8(f.dtype, inf), 0x7C);
      EXPECT_EQ(f32_to_f8(f.dtype, -inf), 0xFC);
      EXPECT_EQ(f32_to_f8(f.dtype, 1e30f), 0x7C);
      EXPECT_EQ(f32_to_f8(f.dtype, -1e30f), 0xFC);
      break;
    case S::FiniteNanAllOnes:  // E4M3: 448 = S.1111.110 is even, so 464 stays 448
    case S::ExponentOnly:      // E8M0: 2^127 = 0xFE is even
      EXPECT_EQ(at_mid, max_byte) << f.name;
      EXPECT_TRUE(definition_is_nan(f, past_mid)) << f.name << " " << hex(past_mid);
      EXPECT_TRUE(definition_is_nan(f, f32_to_f8(f.dtype, inf))) << f.name;
      EXPECT_TRUE(definition_is_nan(f, f32_to_f8(f.dtype, 3e38f))) << f.name;
      break;
    case S::FiniteNanIsNegZero:  // max is S.1111.111 (odd): the tie rounds up, past the range
      EXPECT_TRUE(definition_is_nan(f, at_mid)) << f.name << " " << hex(at_mid);
      EXPECT_TRUE(definition_is_nan(f, past_mid)) << f.name;
      EXPECT_TRUE(definition_is_nan(f, f32_to_f8(f.dtype, inf))) << f.name;
      EXPECT_TRUE(definition_is_nan(f, f32_to_f8(f.dtype, -inf))) << f.name;
      break;
  }
  if (f.specials != S::ExponentOnly) {
    EXPECT_EQ(f32_to_f8(f.dtype, 0.0f), 0x00) << f.name;
    const uint8_t neg_zero = f.specials == S::FiniteNanIsNegZero ? 0x00 : 0x80;
    EXPECT_EQ(f32_to_f8(f.dtype, -0.0f), neg_zero) << f.name;
    // Far below the smallest subnormal: rounds to zero of the same sign (FNUZ: +0).
    EXPECT_EQ(f32_to_f8(f.dtype, 1e-30f), 0x00) << f.name;
    EXPECT_EQ(f32_to_f8(f.dtype, -1e-30f), neg_zero) << f.name;
  } else {
    EXPECT_EQ(f32_to_f8(f.dtype, 1.0f), 0x7F);
    EXPECT_EQ(f32_to_f8(f.dtype, 0.25f), 0x7D);
    EXPECT_EQ(f32_to_f8(f.dtype, 1e-45f), 0x00) << "below 2^-127 clamps to the smallest";
  }
}

TEST_P(F8Formats, ConvertElementsMatchesScalarFromEveryWiderType) {
  const F8Definition& f = GetParam();
  std::vector<float> inputs;
  for (int b = 0; b < 256; ++b) {
    const float x = f8_to_f32(f.dtype, static_cast<uint8_t>(b));
    inputs.push_back(x);
    inputs.push_back(x * 1.0625f);
    inputs.push_back(x * 0.96875f);
  }
  std::vector<uint8_t> from32(inputs.size()), from64(inputs.size()), from16(inputs.size());
  convert_elements(DType::F32, inputs.data(), f.dtype, from32.data(), inputs.size());
  std::vector<double> as64(inputs.begin(), inputs.end());
  convert_elements(DType::F64, as64.data(), f.dtype, from64.data(), as64.size());
  // BF16 holds every value above exactly (8 significant bits at most), so BF16 -> F8 must agree.
  std::vector<uint16_t> as_bf16(inputs.size());
  convert_elements(DType::F32, inputs.data(), DType::BF16, as_bf16.data(), inputs.size());
  convert_elements(DType::BF16, as_bf16.data(), f.dtype, from16.data(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const uint8_t want = f32_to_f8(f.dtype, inputs[i]);
    EXPECT_EQ(from32[i], want) << f.name << " F32 " << inputs[i];
    EXPECT_EQ(from64[i], want) << f.name << " F64 " << inputs[i];
    if (std::isnan(inputs[i]) || bf16_to_f32(as_bf16[i]) == inputs[i]) {
      EXPECT_EQ(from16[i], want) << f.name << " BF16 " << inputs[i];
    }
  }
  // F8 -> F8 goes through the exact F32 value; the same type is a byte copy (NaNs kept as is).
  for (const F8Definition& g : kFormats) {
    std::vector<uint8_t> all(256), out(256);
    for (int b = 0; b < 256; ++b) all[b] = static_cast<uint8_t>(b);
    convert_elements(f.dtype, all.data(), g.dtype, out.data(), 256);
    for (int b = 0; b < 256; ++b) {
      const uint8_t want = g.dtype == f.dtype
                               ? static_cast<uint8_t>(b)
                               : f32_to_f8(g.dtype, f8_to_f32(f.dtype, static_cast<uint8_t>(b)));
      EXPECT_EQ(out[b], want) << f.name << " -> " << g.name << " " << hex(b);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Definition, F8Formats, ::testing::ValuesIn(kFormats),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace ckptio
