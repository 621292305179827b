#include "ckptio/dtype.h"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "ckptio/error.h"

namespace ckptio {
namespace {

struct DTypeInfo {
  std::string_view name;
  int bits;
};

constexpr std::array<DTypeInfo, kDTypeCount> kInfo = {{
    {"BOOL", 8},  {"F4", 4},           {"F6_E2M3", 6},      {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},    {"F8_E5M2", 8},      {"F8_E4M3", 8},      {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8},
    {"F8_E5M2FNUZ", 8}, {"I16", 16},   {"U16", 16},         {"F16", 16},    {"BF16", 16},
    {"I32", 32},  {"U32", 32},         {"F32", 32},         {"C64", 64},    {"F64", 64},
    {"I64", 64},  {"U64", 64},
}};

// A small float format: sign (optional), exponent and mantissa widths, bias, and how it spells
// the specials. Covers F16 too, so one encoder handles every narrowing from F32.
struct MiniFloat {
  int exp_bits;
  int man_bits;
  int bias;
  bool has_inf;        // IEEE style: all-ones exponent is inf (mantissa 0) / NaN
  bool nan_all_ones;   // "fn" style: only S.1111.111 is NaN, other all-ones exponents are finite
  bool nan_neg_zero;   // "fnuz" style: 0x80 is the only NaN, there is no -0
};

constexpr MiniFloat kE5M2{5, 2, 15, true, false, false};
constexpr MiniFloat kE4M3{4, 3, 7, false, true, false};
constexpr MiniFloat kE4M3Fnuz{4, 3, 8, false, false, true};
constexpr MiniFloat kE5M2Fnuz{5, 2, 16, false, false, true};
constexpr MiniFloat kF16{5, 10, 15, true, false, false};

int total_bits(const MiniFloat& f) { return 1 + f.exp_bits + f.man_bits; }

double minifloat_decode(const MiniFloat& f, uint32_t bits) {
  const int nbits = total_bits(f);
  const uint32_t sign = (bits >> (nbits - 1)) & 1u;
  const uint32_t exp = (bits >> f.man_bits) & ((1u << f.exp_bits) - 1);
  const uint32_t man = bits & ((1u << f.man_bits) - 1);
  const uint32_t exp_max = (1u << f.exp_bits) - 1;
  if (f.nan_neg_zero && sign && exp == 0 && man == 0) return std::nan("");
  if (f.has_inf && exp == exp_max) {
    if (man == 0) return sign ? -INFINITY : INFINITY;
    return std::nan("");
  }
  if (f.nan_all_ones && exp == exp_max && man == (1u << f.man_bits) - 1) return std::nan("");
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - f.bias - f.man_bits);
  } else {
    v = std::ldexp(static_cast<double>(man | (1u << f.man_bits)),
                   static_cast<int>(exp) - f.bias - f.man_bits);
  }
  return sign ? -v : v;
}

uint32_t minifloat_nan(const MiniFloat& f) {
  const int nbits = total_bits(f);
  if (f.nan_neg_zero) return 1u << (nbits - 1);
  if (f.nan_all_ones) return (1u << (nbits - 1)) - 1;  // 0.1111.111
  return (((1u << f.exp_bits) - 1) << f.man_bits) | (1u << (f.man_bits - 1));  // quiet NaN
}

// Round-to-nearest-even encode of a double into the format. Works on the exact binary value, so
// it is correct for every F32 input (and F64 inputs, which only F64->narrow paths use through F32).
uint32_t minifloat_encode(const MiniFloat& f, double value) {
  const int nbits = total_bits(f);
  if (std::isnan(value)) return minifloat_nan(f);
  uint32_t sign = std::signbit(value) ? 1u : 0u;
  const uint32_t sign_bit = sign << (nbits - 1);
  double a = std::fabs(value);
  const uint32_t exp_max = (1u << f.exp_bits) - 1;
  // The largest finite encoding.
  uint32_t max_exp_field = f.has_inf ? exp_max - 1 : exp_max;
  uint32_t max_man = (1u << f.man_bits) - 1;
  if (f.nan_all_ones) max_man -= 1;  // S.1111.111 is NaN
  auto overflow = [&]() -> uint32_t {
    if (f.has_inf) return sign_bit | (exp_max << f.man_bits);
    return minifloat_nan(f);
  };
  if (std::isinf(a)) return overflow();
  if (a == 0.0) return f.nan_neg_zero ? 0u : sign_bit;

  // Scale so that the value is an integer count of units of the smallest subnormal step, then
  // round that count to nearest even. Normal numbers use their own exponent's step.
  const int min_normal_exp = 1 - f.bias;
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int unbiased = e - 1;
  if (unbiased < min_normal_exp) unbiased = min_normal_exp;  // subnormal range: fixed step
  const int step_exp = unbiased - f.man_bits;
  double units = std::ldexp(a, -step_exp);  // exact: only exponent changes
  double rounded = std::nearbyint(units);   // default rounding mode is to-nearest-even
  // Rebuild: rounded may have carried into the next binade, which the field arithmetic handles.
  uint64_t q = static_cast<uint64_t>(rounded);
  uint32_t exp_field;
  uint32_t man_field;
  if (unbiased == min_normal_exp && q < (1ull << f.man_bits)) {
    exp_field = 0;  // subnormal (or zero after rounding)
    man_field = static_cast<uint32_t>(q);
  } else {
    int shift_exp = unbiased;
    if (q >= (2ull << f.man_bits)) {  // carried to the next binade
      q >>= 1;
      shift_exp += 1;
    }
    exp_field = static_cast<uint32_t>(shift_exp + f.bias);
    man_field = static_cast<uint32_t>(q) & ((1u << f.man_bits) - 1);
  }
  if (exp_field > max_exp_field || (exp_field == max_exp_field && man_field > max_man)) {
    // Rounding already happened at this binade's step, so anything still past the largest
    // finite encoding was at or beyond the halfway point above it.
    return overflow();
  }
  if (f.nan_neg_zero && exp_field == 0 && man_field == 0) return 0u;  // no -0: rounds to +0
  return sign_bit | (exp_field << f.man_bits) | man_field;
}

const MiniFloat& f8_format(DType dtype) {
  switch (dtype) {
    case DType::F8_E5M2: return kE5M2;
    case DType::F8_E4M3: return kE4M3;
    case DType::F8_E4M3FNUZ: return kE4M3Fnuz;
    case DType::F8_E5M2FNUZ: return kE5M2Fnuz;
    default: break;
  }
  throw Error(ErrorCode::InvalidArgument,
              "not an fp8 dtype with sign and mantissa: " + std::string(dtype_name(dtype)));
}

bool is_f8(DType d) {
  return d == DType::F8_E5M2 || d == DType::F8_E4M3 || d == DType::F8_E8M0 ||
         d == DType::F8_E4M3FNUZ || d == DType::F8_E5M2FNUZ;
}

float e8m0_to_f32(uint8_t bits) {
  if (bits == 0xFF) return std::nanf("");
  return std::ldexp(1.0f, static_cast<int>(bits) - 127);
}

// E8M0 holds only powers of two 2^-127 .. 2^127. Rounding is to the nearest power of two in
// linear distance, ties (exactly 1.5 * 2^k) to the even exponent field. Zero, negative values,
// infinities and NaN have no encoding and give NaN.
uint8_t f32_to_e8m0(float value) {
  if (!(value > 0.0f) || std::isinf(value)) return 0xFF;
  int e;
  const double m = std::frexp(static_cast<double>(value), &e);  // value = m * 2^e, m in [0.5,1)
  int k = e - 1;                                                 // value = (2m) * 2^k
  const double r = 2.0 * m;                                      // in [1, 2)
  if (r > 1.5 || (r == 1.5 && ((k + 127) & 1) != 0)) k += 1;
  if (k < -127) k = -127;
  if (k > 127) return 0xFF;
  return static_cast<uint8_t>(k + 127);
}

}  // namespace

int dtype_bits(DType dtype) { return kInfo.at(static_cast<size_t>(dtype)).bits; }
std::string_view dtype_name(DType dtype) { return kInfo.at(static_cast<size_t>(dtype)).name; }

std::optional<DType> parse_dtype(std::string_view name) {
  // Headers name a dtype once per tensor; the common ones are found first.
  static constexpr DType kCommon[] = {DType::BF16, DType::F32, DType::F16, DType::I64};
  for (DType d : kCommon) {
    if (kInfo[static_cast<size_t>(d)].name == name) return d;
  }
  for (size_t i = 0; i < kInfo.size(); ++i) {
    if (kInfo[i].name == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

DType dtype_from_user_string(std::string_view name) {
  if (auto d = parse_dtype(name)) return *d;
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  struct Alias {
    std::string_view name;
    DType dtype;
  };
  static constexpr Alias kAliases[] = {
      {"bf16", DType::BF16},    {"bfloat16", DType::BF16}, {"f16", DType::F16},
      {"fp16", DType::F16},     {"float16", DType::F16},   {"half", DType::F16},
      {"f32", DType::F32},      {"fp32", DType::F32},      {"float32", DType::F32},
      {"float", DType::F32},    {"f64", DType::F64},       {"fp64", DType::F64},
      {"float64", DType::F64},  {"double", DType::F64},    {"fp8_e4m3", DType::F8_E4M3},
      {"fp8_e5m2", DType::F8_E5M2},
  };
  for (const auto& a : kAliases) {
    if (a.name == lower) return a.dtype;
  }
  throw Error(ErrorCode::InvalidArgument, "unknown dtype '" + std::string(name) + "'");
}

bool dtype_is_float(DType d) {
  switch (d) {
    case DType::F4: case DType::F6_E2M3: case DType::F6_E3M2: case DType::F8_E5M2:
    case DType::F8_E4M3: case DType::F8_E8M0: case DType::F8_E4M3FNUZ: case DType::F8_E5M2FNUZ:
    case DType::F16: case DType::BF16: case DType::F32: case DType::F64:
      return true;
    default:
      return false;
  }
}

float f16_to_f32(uint16_t bits) { return static_cast<float>(minifloat_decode(kF16, bits)); }

uint16_t f32_to_f16(float value) {
  return static_cast<uint16_t>(minifloat_encode(kF16, static_cast<double>(value)));
}

float bf16_to_f32(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t f32_to_bf16(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // keep sign, quiet
  // Round to nearest even on the 16 dropped bits; a carry into the exponent is the correct result
  // (including rounding the largest finite values up to infinity).
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7FFFu + lsb;
  return static_cast<uint16_t>(u >> 16);
}

float f8_to_f32(DType dtype, uint8_t bits) {
  if (dtype == DType::F8_E8M0) return e8m0_to_f32(bits);
  return static_cast<float>(minifloat_decode(f8_format(dtype), bits));
}

uint8_t f32_to_f8(DType dtype, float value) {
  if (dtype == DType::F8_E8M0) return f32_to_e8m0(value);
  return static_cast<uint8_t>(minifloat_encode(f8_format(dtype), static_cast<double>(value)));
}

bool can_convert(DType from, DType to) {
  auto ok = [](DType d) {
    return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16 || is_f8(d);
  };
  return from == to || (ok(from) && ok(to));
}

namespace {

double load_as_double(DType d, const std::byte* p) {
  switch (d) {
    case DType::F64: { double v; std::memcpy(&v, p, 8); return v; }
    case DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::F16: { uint16_t v; std::memcpy(&v, p, 2); return f16_to_f32(v); }
    case DType::BF16: { uint16_t v; std::memcpy(&v, p, 2); return bf16_to_f32(v); }
    default: return f8_to_f32(d, static_cast<uint8_t>(*p));
  }
}

void store_from_double(DType d, double v, std::byte* p) {
  switch (d) {
    case DType::F64: std::memcpy(p, &v, 8); return;
    case DType::F32: { float f = static_cast<float>(v); std::memcpy(p, &f, 4); return; }
    default: break;
  }
  // Narrow targets round once from F32; a direct F64 source would round twice (F64->F32->F16),
  // so it goes through the exact encoder instead.
  switch (d) {
    case DType::F16: {
      uint16_t b = static_cast<uint16_t>(minifloat_encode(kF16, v));
      std::memcpy(p, &b, 2);
      return;
    }
    case DType::BF16: {
      // Exact for F32 inputs; for F64 inputs, encode via a 8-bit-exponent, 7-bit-mantissa float.
      static constexpr MiniFloat kBF16{8, 7, 127, true, false, false};
      uint16_t b = static_cast<uint16_t>(minifloat_encode(kBF16, v));
      if (std::isnan(v)) b = f32_to_bf16(static_cast<float>(v));
      std::memcpy(p, &b, 2);
      return;
    }
    case DType::F8_E8M0:
      *p = static_cast<std::byte>(f32_to_e8m0(static_cast<float>(v)));
      return;
    default:
      *p = static_cast<std::byte>(minifloat_encode(f8_format(d), v));
      return;
  }
}

}  // namespace

void convert_elements(DType from, const void* src, DType to, void* dst, size_t count) {
  if (!can_convert(from, to)) {
    throw Error(ErrorCode::Unsupported, "no conversion from " + std::string(dtype_name(from)) +
                                            " to " + std::string(dtype_name(to)));
  }
  if (count == 0) return;  // src/dst may be null for empty tensors; memmove(null) is UB
  const size_t in_size = static_cast<size_t>(dtype_bits(from) / 8);
  const size_t out_size = static_cast<size_t>(dtype_bits(to) / 8);
  if (from == to) {
    std::memmove(dst, src, count * in_size);
    return;
  }
  const auto* in = static_cast<const std::byte*>(src);
  auto* out = static_cast<std::byte*>(dst);
  // The common training-state cases get a tight loop; the rest go through double.
  if (from == DType::F32 && to == DType::BF16) {
    for (size_t i = 0; i < count; ++i) {
      float v;
      std::memcpy(&v, in + 4 * i, 4);
      uint16_t b = f32_to_bf16(v);
      std::memcpy(out + 2 * i, &b, 2);
    }
    return;
  }
  if (from == DType::BF16 && to == DType::F32) {
    for (size_t i = 0; i < count; ++i) {
      uint16_t b;
      std::memcpy(&b, in + 2 * i, 2);
      float v = bf16_to_f32(b);
      std::memcpy(out + 4 * i, &v, 4);
    }
    return;
  }
  for (size_t i = 0; i < count; ++i) {
    store_from_double(to, load_as_double(from, in + in_size * i), out + out_size * i);
  }
}

}  // namespace ckptio
