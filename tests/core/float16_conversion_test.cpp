// F16 and BF16 <-> F32 (and F64) conversions, checked exhaustively against PyTorch and NumPy.
//
// The reference tables are made at test time by the system Python (PyTorch 1.13, NumPy): every one
// of the 65,536 bit patterns decoded, and a large set of F32 inputs encoded. The input set holds
// every representable value, every midpoint between adjacent values (where ties-to-even decides)
// and the F32 neighbours of each midpoint, plus specials and random bit patterns.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ckptio/dtype.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::python_has_torch;
using testing::run_python;
using testing::TempDir;

template <typename T>
void write_array(const fs::path& path, const std::vector<T>& v) {
  testing::write_file(path, std::string_view(reinterpret_cast<const char*>(v.data()),
                                             v.size() * sizeof(T)));
}

template <typename T>
std::vector<T> read_array(const fs::path& path) {
  const std::string bytes = testing::read_file(path);
  std::vector<T> v(bytes.size() / sizeof(T));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

float bits_to_f32(uint32_t b) { return std::bit_cast<float>(b); }
uint32_t f32_bits(float f) { return std::bit_cast<uint32_t>(f); }

bool f16_bits_are_nan(uint16_t b) { return (b & 0x7C00) == 0x7C00 && (b & 0x03FF) != 0; }
bool bf16_bits_are_nan(uint16_t b) { return (b & 0x7F80) == 0x7F80 && (b & 0x007F) != 0; }

// An F16 value from its definition (sign, 5-bit exponent, bias 15, 10-bit mantissa); finite only.
// Independent of the library, used only to place midpoints.
double f16_finite_value(uint32_t b) {
  const uint32_t exp = (b >> 10) & 31;
  const uint32_t man = b & 1023;
  return exp == 0 ? std::ldexp(man, -24) : std::ldexp(1024 + man, static_cast<int>(exp) - 25);
}

constexpr const char* kTorchDecode = R"py(
import sys, numpy as np, torch
kind, out = sys.argv[1], sys.argv[2]
dt = {'f16': torch.float16, 'bf16': torch.bfloat16}[kind]
bits = torch.from_numpy(np.arange(65536, dtype=np.uint16).view(np.int16))
bits.view(dt).to(torch.float32).numpy().astype('<f4').tofile(out)
)py";

constexpr const char* kTorchEncode = R"py(
import sys, numpy as np, torch
kind, inp, out = sys.argv[1], sys.argv[2], sys.argv[3]
dt = {'f16': torch.float16, 'bf16': torch.bfloat16}[kind]
x = torch.from_numpy(np.fromfile(inp, dtype='<f4'))
x.to(dt).view(torch.int16).numpy().astype('<i2').tofile(out)
)py";

constexpr const char* kNumpyF64ToF16 = R"py(
import sys, numpy as np
x = np.fromfile(sys.argv[1], dtype='<f8')
x.astype(np.float16).view('<u2').tofile(sys.argv[2])
)py";

// Every value, midpoint and midpoint neighbour of both 16-bit formats, both signs, plus specials
// and random F32 bit patterns.
std::vector<float> encode_inputs() {
  std::vector<float> v;
  auto add = [&](float x) {
    v.push_back(x);
    v.push_back(-x);
  };
  auto add_with_neighbours = [&](float x) {
    add(x);
    add(std::nextafter(x, 0.0f));
    add(std::nextafter(x, std::numeric_limits<float>::infinity()));
  };
  for (uint32_t b = 0; b < 0x7C00; ++b) {  // every finite F16; 0x7BFF's upper neighbour is 2^16
    const double lo = f16_finite_value(b);
    const double hi = b == 0x7BFF ? 65536.0 : f16_finite_value(b + 1);
    add(static_cast<float>(lo));
    add_with_neighbours(static_cast<float>((lo + hi) / 2));  // exact: 12 significant bits
  }
  for (uint32_t b = 0; b < 0x7F80; ++b) {  // every finite BF16; its midpoint has low half 0x8000
    add(bits_to_f32(b << 16));
    add_with_neighbours(bits_to_f32((b << 16) | 0x8000));
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {0.0f, inf, std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::denorm_min(), 65504.0f, 65519.0f, 65520.0f,
                  65535.0f, 1e10f, 3.0e38f, 1e-8f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f}) {
    add(x);
  }
  for (uint32_t nan_bits : {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0x7FA00000u, 0x7F80FFFFu}) {
    add(bits_to_f32(nan_bits));
  }
  std::mt19937 rng(20261128);
  for (int i = 0; i < 100000; ++i) v.push_back(bits_to_f32(static_cast<uint32_t>(rng())));
  for (int i = 0; i < 20000; ++i) {  // F32 subnormals
    v.push_back(bits_to_f32(static_cast<uint32_t>(rng()) & 0x807FFFFFu));
  }
  return v;
}

struct Format16 {
  const char* torch_kind;
  DType dtype;
  float (*decode)(uint16_t);
  uint16_t (*encode)(float);
  bool (*is_nan)(uint16_t);
};

const Format16 kF16{"f16", DType::F16, f16_to_f32, f32_to_f16, f16_bits_are_nan};
const Format16 kBF16{"bf16", DType::BF16, bf16_to_f32, f32_to_bf16, bf16_bits_are_nan};

class Float16Formats : public ::testing::TestWithParam<const Format16*> {
 protected:
  void SetUp() override {
    if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
  }
};

TEST_P(Float16Formats, DecodeAll65536MatchesPyTorch) {
  const Format16& f = *GetParam();
  TempDir dir;
  ASSERT_EQ(run_python(dir.path(), kTorchDecode,
                       std::string(f.torch_kind) + " " + (dir / "table.f32").string()),
            0);
  const auto table = read_array<uint32_t>(dir / "table.f32");
  ASSERT_EQ(table.size(), 65536u);

  std::vector<uint16_t> all(65536);
  for (uint32_t b = 0; b < 65536; ++b) all[b] = static_cast<uint16_t>(b);
  std::vector<float> bulk(65536);
  convert_elements(f.dtype, all.data(), DType::F32, bulk.data(), all.size());
  std::vector<double> bulk64(65536);
  convert_elements(f.dtype, all.data(), DType::F64, bulk64.data(), all.size());

  int mismatches = 0;
  int nans = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    const float want = bits_to_f32(table[b]);
    const float got = f.decode(static_cast<uint16_t>(b));
    bool ok;
    if (std::isnan(want)) {
      ++nans;
      ok = std::isnan(got) && std::isnan(bulk[b]) && std::isnan(bulk64[b]);
    } else {
      ok = f32_bits(got) == table[b] && f32_bits(bulk[b]) == table[b] &&
           std::bit_cast<uint64_t>(bulk64[b]) == std::bit_cast<uint64_t>(double{want});
    }
    if (!ok && ++mismatches <= 10) {
      ADD_FAILURE() << f.torch_kind << " bits 0x" << std::hex << b << ": torch 0x" << table[b]
                    << " (" << want << "), scalar 0x" << f32_bits(got) << ", bulk 0x"
                    << f32_bits(bulk[b]);
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(nans, f.dtype == DType::F16 ? 2 * 1023 : 2 * 127);  // the table itself is sane
}

TEST_P(Float16Formats, EncodeFromF32MatchesPyTorchIncludingEveryMidpoint) {
  const Format16& f = *GetParam();
  TempDir dir;
  const std::vector<float> inputs = encode_inputs();
  write_array(dir / "in.f32", inputs);
  ASSERT_EQ(run_python(dir.path(), kTorchEncode,
                       std::string(f.torch_kind) + " " + (dir / "in.f32").string() + " " +
                           (dir / "out.bits").string()),
            0);
  const auto want = read_array<uint16_t>(dir / "out.bits");
  ASSERT_EQ(want.size(), inputs.size());

  std::vector<uint16_t> bulk(inputs.size());
  convert_elements(DType::F32, inputs.data(), f.dtype, bulk.data(), inputs.size());

  int mismatches = 0;
  size_t ties_checked = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const uint16_t got = f.encode(inputs[i]);
    const bool ok = f.is_nan(want[i]) ? (f.is_nan(got) && f.is_nan(bulk[i]))
                                      : (got == want[i] && bulk[i] == want[i]);
    if (f.dtype == DType::BF16 && (f32_bits(inputs[i]) & 0xFFFF) == 0x8000) ++ties_checked;
    if (!ok && ++mismatches <= 10) {
      ADD_FAILURE() << f.torch_kind << " input 0x" << std::hex << f32_bits(inputs[i]) << " ("
                    << inputs[i] << "): torch 0x" << want[i] << ", scalar 0x" << got
                    << ", bulk 0x" << bulk[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << inputs.size() << " inputs";
  if (f.dtype == DType::BF16) {
    EXPECT_GT(ties_checked, 60000u);
  }
}

TEST_P(Float16Formats, SpecialValues) {
  const Format16& f = *GetParam();
  const float inf = std::numeric_limits<float>::infinity();
  const uint16_t pos_inf = f.dtype == DType::F16 ? 0x7C00 : 0x7F80;
  EXPECT_EQ(f.encode(inf), pos_inf);
  EXPECT_EQ(f.encode(-inf), pos_inf | 0x8000);
  EXPECT_EQ(f.encode(0.0f), 0x0000);
  EXPECT_EQ(f.encode(-0.0f), 0x8000);
  EXPECT_TRUE(f.is_nan(f.encode(std::nanf(""))));
  EXPECT_TRUE(f.is_nan(f.encode(-std::nanf(""))));
  EXPECT_TRUE(f.is_nan(f.encode(bits_to_f32(0x7F800001))));  // a NaN whose payload is low bits
  EXPECT_EQ(f.decode(pos_inf), inf);
  EXPECT_EQ(f.decode(pos_inf | 0x8000), -inf);
  EXPECT_TRUE(std::signbit(f.decode(0x8000)));
  // Overflow rounds to infinity, the largest finite value stays.
  const float max_finite = f.dtype == DType::F16 ? 65504.0f : bits_to_f32(0x7F7F0000);
  EXPECT_EQ(f.encode(max_finite), pos_inf - 1);
  EXPECT_EQ(f.encode(std::numeric_limits<float>::max()), pos_inf);
}

INSTANTIATE_TEST_SUITE_P(Torch, Float16Formats, ::testing::Values(&kF16, &kBF16),
                         [](const auto& info) { return std::string(info.param->torch_kind); });

// F64 -> F16 must round once, from the double itself. Inputs a hair off a midpoint catch double
// rounding through F32 (which would land on the midpoint and then go to even).
TEST(Float16FromF64, MatchesNumPyIncludingNearMidpoints) {
  if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no numpy";
  TempDir dir;
  std::vector<double> inputs;
  for (uint32_t b = 0; b < 0x7C00; ++b) {
    const double lo = f16_finite_value(b);
    const double hi = b == 0x7BFF ? 65536.0 : f16_finite_value(b + 1);
    const double mid = (lo + hi) / 2;
    for (double x : {lo, mid, mid * (1 + 0x1p-30), mid * (1 - 0x1p-30), mid * (1 + 0x1p-50)}) {
      inputs.push_back(x);
      inputs.push_back(-x);
    }
  }
  inputs.push_back(std::numeric_limits<double>::infinity());
  inputs.push_back(1e300);
  inputs.push_back(1e-300);
  inputs.push_back(std::numeric_limits<double>::denorm_min());
  write_array(dir / "in.f64", inputs);
  ASSERT_EQ(run_python(dir.path(), kNumpyF64ToF16,
                       (dir / "in.f64").string() + " " + (dir / "out.bits").string()),
            0);
  const auto want = read_array<uint16_t>(dir / "out.bits");
  ASSERT_EQ(want.size(), inputs.size());
  std::vector<uint16_t> got(inputs.size());
  convert_elements(DType::F64, inputs.data(), DType::F16, got.data(), inputs.size());
  int mismatches = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (got[i] != want[i] && ++mismatches <= 10) {
      ADD_FAILURE() << "input " << inputs[i] << " (0x" << std::hex
                    << std::bit_cast<uint64_t>(inputs[i]) << "): numpy 0x" << want[i]
                    << ", ckptio 0x" << got[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << inputs.size();
}

// F64 -> BF16 from the definition: a value just above a midpoint rounds up, just below rounds
// down, exactly on it goes to the even neighbour.
TEST(BFloat16FromF64, RoundsOnceNearEveryMidpoint) {
  int mismatches = 0;
  for (uint32_t b = 0; b < 0x7F80; ++b) {
    const double lo = bits_to_f32(b << 16);
    const double mid = bits_to_f32((b << 16) | 0x8000);
    const uint16_t even = (b & 1) ? static_cast<uint16_t>(b + 1) : static_cast<uint16_t>(b);
    struct Case {
      double x;
      uint16_t want;
    };
    for (const Case& c : {Case{lo, static_cast<uint16_t>(b)}, Case{mid, even},
                          Case{mid + (mid - lo) * 0x1p-30, static_cast<uint16_t>(b + 1)},
                          Case{mid - (mid - lo) * 0x1p-30, static_cast<uint16_t>(b)}}) {
      for (int sign = 0; sign < 2; ++sign) {
        const double x = sign ? -c.x : c.x;
        const uint16_t want = static_cast<uint16_t>(c.want | (sign ? 0x8000 : 0));
        uint16_t got = 0;
        convert_elements(DType::F64, &x, DType::BF16, &got, 1);
        if (got != want && ++mismatches <= 10) {
          ADD_FAILURE() << "F64 " << x << ": want BF16 0x" << std::hex << want << ", got 0x"
                        << got;
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  uint16_t out[3];
  const double in[3] = {nan, inf, -1e300};
  convert_elements(DType::F64, in, DType::BF16, out, 3);
  EXPECT_TRUE(bf16_bits_are_nan(out[0]));
  EXPECT_EQ(out[1], 0x7F80);
  EXPECT_EQ(out[2], 0xFF80);
}

TEST(Float16Between, F16AndBF16ConvertThroughF32) {
  // BF16 -> F16 rounds the (exact) F32 value once; F16 -> BF16 likewise.
  std::vector<uint16_t> all(65536);
  for (uint32_t b = 0; b < 65536; ++b) all[b] = static_cast<uint16_t>(b);
  std::vector<uint16_t> to_f16(65536), to_bf16(65536);
  convert_elements(DType::BF16, all.data(), DType::F16, to_f16.data(), all.size());
  convert_elements(DType::F16, all.data(), DType::BF16, to_bf16.data(), all.size());
  int mismatches = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t want_f16 = f32_to_f16(bf16_to_f32(static_cast<uint16_t>(b)));
    const uint16_t want_bf16 = f32_to_bf16(f16_to_f32(static_cast<uint16_t>(b)));
    const bool ok16 = f16_bits_are_nan(want_f16) ? f16_bits_are_nan(to_f16[b])
                                                 : to_f16[b] == want_f16;
    const bool okbf = bf16_bits_are_nan(want_bf16) ? bf16_bits_are_nan(to_bf16[b])
                                                   : to_bf16[b] == want_bf16;
    if ((!ok16 || !okbf) && ++mismatches <= 10) {
      ADD_FAILURE() << "bits 0x" << std::hex << b << ": bf16->f16 0x" << to_f16[b] << " want 0x"
                    << want_f16 << "; f16->bf16 0x" << to_bf16[b] << " want 0x" << want_bf16;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace ckptio
