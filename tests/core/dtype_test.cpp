// DType: names, bit widths and the declaration order the safetensors writer relies on.
#include "ckptio/dtype.h"

#include <gtest/gtest.h>

#include <array>
#include <string>

#include "ckptio/error.h"

namespace ckptio {
namespace {

struct Expected {
  const char* name;
  int bits;
  bool is_float;
};

// The safetensors reference's Dtype enum, in its declaration (increasing alignment) order, with
// the bit sizes from its `bitsize()`.
constexpr std::array<Expected, kDTypeCount> kReference = {{
    {"BOOL", 8, false},       {"F4", 4, true},           {"F6_E2M3", 6, true},
    {"F6_E3M2", 6, true},     {"U8", 8, false},          {"I8", 8, false},
    {"F8_E5M2", 8, true},     {"F8_E4M3", 8, true},      {"F8_E8M0", 8, true},
    {"F8_E4M3FNUZ", 8, true}, {"F8_E5M2FNUZ", 8, true},  {"I16", 16, false},
    {"U16", 16, false},       {"F16", 16, true},         {"BF16", 16, true},
    {"I32", 32, false},       {"U32", 32, false},        {"F32", 32, true},
    {"C64", 64, false},       {"F64", 64, true},         {"I64", 64, false},
    {"U64", 64, false},
}};

TEST(DTypeNames, EnumOrderNamesAndBitsMatchTheReference) {
  for (int i = 0; i < kDTypeCount; ++i) {
    const DType d = static_cast<DType>(i);
    SCOPED_TRACE(kReference[i].name);
    EXPECT_EQ(dtype_name(d), kReference[i].name);
    EXPECT_EQ(dtype_bits(d), kReference[i].bits);
    EXPECT_EQ(dtype_is_float(d), kReference[i].is_float);
  }
}

TEST(DTypeNames, EveryNameParsesBackToItsDType) {
  for (int i = 0; i < kDTypeCount; ++i) {
    const DType d = static_cast<DType>(i);
    const auto parsed = parse_dtype(dtype_name(d));
    ASSERT_TRUE(parsed.has_value()) << dtype_name(d);
    EXPECT_EQ(*parsed, d);
    EXPECT_EQ(dtype_from_user_string(dtype_name(d)), d);
  }
}

TEST(DTypeNames, ParseIsExactAndCaseSensitive) {
  for (const char* bad : {"", "f32", "F32 ", " F32", "F128", "F8", "FLOAT", "bool", "F8_E4M3FN"}) {
    EXPECT_FALSE(parse_dtype(bad).has_value()) << "'" << bad << "'";
  }
  EXPECT_FALSE(parse_dtype(std::string_view("F32\0", 4)).has_value());
}

TEST(DTypeNames, UserSpellings) {
  EXPECT_EQ(dtype_from_user_string("bf16"), DType::BF16);
  EXPECT_EQ(dtype_from_user_string("bfloat16"), DType::BF16);
  EXPECT_EQ(dtype_from_user_string("fp16"), DType::F16);
  EXPECT_EQ(dtype_from_user_string("half"), DType::F16);
  EXPECT_EQ(dtype_from_user_string("float32"), DType::F32);
  EXPECT_EQ(dtype_from_user_string("Float32"), DType::F32);
  EXPECT_EQ(dtype_from_user_string("double"), DType::F64);
  try {
    dtype_from_user_string("float128");
    FAIL() << "no error for an unknown dtype";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(e.message().find("float128"), std::string::npos) << e.message();
  }
}

TEST(DTypeConversion, ConvertiblePairs) {
  const DType floats[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3,
                          DType::F8_E5M2, DType::F8_E8M0, DType::F8_E4M3FNUZ, DType::F8_E5M2FNUZ};
  for (DType a : floats) {
    for (DType b : floats) EXPECT_TRUE(can_convert(a, b)) << dtype_name(a) << dtype_name(b);
  }
  for (int i = 0; i < kDTypeCount; ++i) {
    EXPECT_TRUE(can_convert(static_cast<DType>(i), static_cast<DType>(i)));
  }
  EXPECT_FALSE(can_convert(DType::F32, DType::I32));
  EXPECT_FALSE(can_convert(DType::I64, DType::F64));
  EXPECT_FALSE(can_convert(DType::F4, DType::F32));
  EXPECT_FALSE(can_convert(DType::F32, DType::C64));
  float src[2] = {1.0f, 2.0f};
  int32_t dst[2] = {};
  try {
    convert_elements(DType::F32, src, DType::I32, dst, 2);
    FAIL() << "F32 -> I32 converted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unsupported);
  }
}

TEST(DTypeConversion, SameTypeIsAByteCopy) {
  const uint16_t src[4] = {0x7E01, 0xFFFF, 0x0001, 0x8000};  // includes NaN payloads
  uint16_t dst[4] = {};
  convert_elements(DType::F16, src, DType::F16, dst, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(dst[i], src[i]);
}

}  // namespace
}  // namespace ckptio
