// Element types: every dtype safetensors defines, and exact conversions between the float types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace ckptio {

// Declared in the safetensors reference order (increasing alignment). The writer relies on this:
// it lays tensors out by descending DType value, exactly as the reference does.
enum class DType : uint8_t {
  BOOL,
  F4,       // e2m1, 4 bits, two per byte
  F6_E2M3,  // 6 bits
  F6_E3M2,  // 6 bits
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,      // "fn": no infinities, NaN = S.1111.111
  F8_E8M0,      // exponent only (microscaling scales), 0xFF = NaN
  F8_E4M3FNUZ,  // no infinities, no negative zero, NaN = 0x80, bias 8
  F8_E5M2FNUZ,  // no infinities, no negative zero, NaN = 0x80, bias 16
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64,
  F64,
  I64,
  U64,
};

inline constexpr int kDTypeCount = 22;

// Bits per element (4 for F4, 6 for the F6 types, 64 for C64).
int dtype_bits(DType dtype);
// The safetensors name ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType dtype);
// Parses a safetensors name; exact, case-sensitive. std::nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name);
// Parses the user-facing spellings too ("bf16", "float32", "fp16", "half"); throws
// Error(InvalidArgument) when unknown.
DType dtype_from_user_string(std::string_view name);

bool dtype_is_float(DType dtype);  // every IEEE-like and fp8/fp6/fp4 type, not C64

// Scalar conversions. "to" functions round to nearest, ties to even; NaN stays NaN, infinities
// stay infinite where the target has them. Targets without infinities (F8_E4M3, the FNUZ types)
// turn an infinity or a value past their largest finite into NaN, as PyTorch does; F8_E5M2
// overflows to infinity.
float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);
float bf16_to_f32(uint16_t bits);
uint16_t f32_to_bf16(float value);
float f8_to_f32(DType f8_dtype, uint8_t bits);    // any of the five F8 types
uint8_t f32_to_f8(DType f8_dtype, float value);

// Element-wise conversion of `count` elements between any two of F64, F32, F16, BF16 and the F8
// types (same-type is a copy). Goes through F64 when either side is F64 and through F32 otherwise,
// which is exact: every F16/BF16/F8 value is an F32, and F32->narrow rounds once.
// Throws Error(Unsupported) for other pairs.
void convert_elements(DType from, const void* src, DType to, void* dst, size_t count);
bool can_convert(DType from, DType to);

}  // namespace ckptio
