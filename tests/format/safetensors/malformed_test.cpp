// The malformed-file corpus: one file per way a safetensors file can be wrong (the list in
// security-and-crash-consistency.md section 5.1, plus the stricter rules of the issue), each built
// here, written to disk, and rejected by parse_safetensors and by the reader in both modes with
// the expected code: Corrupt for format violations, Unsupported for an unknown dtype string.
// Under ASan/UBSan these also prove that no input reads out of bounds or overflows.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "ckptio/safetensors.h"
#include "format/safetensors/safetensors_test_util.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::as_byte_span;
using testing::capture_error;
using testing::le64;
using testing::st_file;
using testing::TempDir;

// One tensor entry.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}
std::string f32(const std::string& name, const std::string& shape, const std::string& offsets) {
  return entry(name, "\"F32\"", shape, offsets);
}

// A shape of `rank` ones: "[1,1,...]".
std::string ones(int rank) {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += i ? ",1" : "1";
  return s + "]";
}

struct Malformed {
  std::string name;
  std::string bytes;
  ErrorCode code = ErrorCode::Corrupt;
  SafetensorsLimits limits = {};
};

std::vector<Malformed> corpus() {
  const std::string d16(16, '\x5A');
  const std::string good = f32("a", "[4]", "[0,16]");
  std::vector<Malformed> c = {
      // 1. The length prefix.
      {"empty_file", ""},
      {"seven_bytes", std::string(7, '\0')},
      {"length_u64_max", le64(UINT64_MAX) + "{}"},
      {"length_one_over_limit", le64(100'000'001) + "{}"},
      {"length_high_bits", le64(0xffffff0000000000ull) + "{}"},
      {"header_past_eof_by_one", le64(3) + "{}"},
      {"header_far_past_eof", le64(1000) + "{}"},
      {"length_zero", le64(0)},
      // 2. Encoding and JSON.
      {"invalid_utf8_in_name", st_file("{" + f32("\xff", "[4]", "[0,16]") + "}", d16)},
      {"overlong_utf8_in_name", st_file("{" + f32("\xc0\xaf", "[4]", "[0,16]") + "}", d16)},
      {"lone_surrogate_escape", st_file("{" + f32("\\ud800", "[4]", "[0,16]") + "}", d16)},
      {"invalid_escape", st_file("{" + f32("a\\x", "[4]", "[0,16]") + "}", d16)},
      {"raw_control_char_in_name", st_file("{" + f32("a\x01", "[4]", "[0,16]") + "}", d16)},
      {"not_an_object_array", st_file("[]")},
      {"not_an_object_string", st_file("\"x\"")},
      {"not_an_object_null", st_file("null")},
      {"not_an_object_number", st_file("1")},
      {"truncated_object", st_file("{")},
      {"truncated_entry", st_file("{\"a\":{\"dtype\":\"F32\",\"sha")},
      {"trailing_nul_padding", st_file(std::string("{}\0\0\0\0\0\0", 8))},
      {"nul_then_garbage", st_file(std::string("{}\0 garbage", 11))},
      {"nul_between_entries",
       st_file("{" + good + std::string(1, '\0') + "," + f32("b", "[4]", "[16,32]") + "}", d16)},
      {"trailing_garbage_text", st_file("{} garbage")},
      {"two_objects", st_file("{}{}")},
      {"comment", st_file("{/* c */}")},
      {"utf8_bom", st_file("\xEF\xBB\xBF{}")},
      // 3. Names and metadata.
      {"duplicate_tensor_name",
       st_file("{" + f32("a", "[4]", "[0,16]") + "," + entry("a", "\"I32\"", "[4]", "[0,16]") + "}",
               d16)},
      {"metadata_value_number", st_file(R"({"__metadata__":{"k":1}})")},
      {"metadata_value_object", st_file(R"({"__metadata__":{"k":{}}})")},
      {"metadata_value_null", st_file(R"({"__metadata__":{"k":null}})")},
      {"metadata_value_array", st_file(R"({"__metadata__":{"k":["v"]}})")},
      {"metadata_value_bool", st_file(R"({"__metadata__":{"k":true}})")},
      {"metadata_not_an_object", st_file(R"({"__metadata__":"format=pt"})")},
      {"metadata_as_tensor_entry",
       st_file("{" + f32("__metadata__", "[4]", "[0,16]") + "}", d16)},
      {"metadata_twice", st_file(R"({"__metadata__":{},"__metadata__":{}})")},
      {"metadata_duplicate_key", st_file(R"({"__metadata__":{"k":"a","k":"b"}})")},
      {"metadata_deep_nesting",
       st_file(R"({"__metadata__":{"k":)" + std::string(100000, '[') + std::string(100000, ']') +
               "}}")},
      // 4. Tensor entries.
      {"entry_not_an_object", st_file(R"({"a":[0,16]})", d16)},
      {"entry_missing_dtype", st_file(R"({"a":{"shape":[4],"data_offsets":[0,16]}})", d16)},
      {"entry_missing_shape", st_file(R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", d16)},
      {"entry_missing_offsets", st_file(R"({"a":{"dtype":"F32","shape":[4]}})", d16)},
      {"entry_unknown_field",
       st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"extra":1}})", d16)},
      {"entry_duplicate_field",
       st_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d16)},
      {"dtype_unknown_F128", st_file("{" + entry("a", "\"F128\"", "[1]", "[0,16]") + "}", d16),
       ErrorCode::Unsupported},
      {"dtype_lowercase", st_file("{" + entry("a", "\"f32\"", "[4]", "[0,16]") + "}", d16),
       ErrorCode::Unsupported},
      {"dtype_empty_string", st_file("{" + entry("a", "\"\"", "[4]", "[0,16]") + "}", d16),
       ErrorCode::Unsupported},
      {"dtype_number", st_file("{" + entry("a", "7", "[4]", "[0,16]") + "}", d16)},
      {"dtype_null", st_file("{" + entry("a", "null", "[4]", "[0,16]") + "}", d16)},
      // 5. Shapes.
      {"shape_negative", st_file("{" + f32("a", "[-4]", "[0,16]") + "}", d16)},
      {"shape_float", st_file("{" + f32("a", "[2.0,2]", "[0,16]") + "}", d16)},
      {"shape_exponent", st_file("{" + f32("a", "[4e0]", "[0,16]") + "}", d16)},
      {"shape_string", st_file("{" + f32("a", "[\"4\"]", "[0,16]") + "}", d16)},
      {"shape_not_an_array", st_file("{" + f32("a", "4", "[0,16]") + "}", d16)},
      {"shape_nested_array", st_file("{" + f32("a", "[[4]]", "[0,16]") + "}", d16)},
      {"shape_above_int64", st_file("{" + f32("a", "[2,18446744073709551614]", "[0,16]") + "}", d16)},
      {"shape_above_uint64", st_file("{" + f32("a", "[36893488147419103232]", "[0,16]") + "}", d16)},
      {"shape_numel_times_bits_overflow",
       st_file("{" + f32("a", "[2,9223372036854775807]", "[0,16]") + "}", d16)},
      {"shape_2_32_squared_empty_offsets",
       st_file("{" + f32("a", "[4294967296,4294967296]", "[0,0]") + "}")},
      {"shape_product_wraps_to_4",
       st_file("{" + f32("a", "[4194305,4194305,211106198978564]", "[0,16]") + "}", d16)},
      {"rank_above_limit",
       st_file("{" + entry("a", "\"U8\"", ones(65), "[0,1]") + "}", "\x01")},
      {"f4_odd_element_count", st_file("{" + entry("a", "\"F4\"", "[3]", "[0,2]") + "}", "\x01\x02")},
      {"f6_partial_byte", st_file("{" + entry("a", "\"F6_E2M3\"", "[2]", "[0,2]") + "}", "\x01\x02")},
      // 6. Offsets.
      {"offsets_reversed", st_file("{" + f32("a", "[0]", "[16,0]") + "}", d16)},
      {"offsets_reversed_sized", st_file("{" + f32("a", "[4]", "[16,0]") + "}", d16)},
      {"offsets_hole",
       st_file("{" + f32("a", "[1]", "[0,4]") + "," + f32("b", "[2]", "[8,16]") + "}", d16)},
      {"offsets_overlap",
       st_file("{" + f32("a", "[3]", "[0,12]") + "," + f32("b", "[2]", "[8,16]") + "}", d16)},
      {"offsets_alias_same_range",
       st_file("{" + f32("a", "[4]", "[0,16]") + "," + f32("b", "[4]", "[0,16]") + "}", d16)},
      {"offsets_not_starting_at_zero", st_file("{" + f32("a", "[3]", "[4,16]") + "}", d16)},
      {"offsets_past_buffer", st_file("{" + f32("a", "[8]", "[0,32]") + "}", d16)},
      {"offsets_three_items", st_file("{" + f32("a", "[4]", "[0,16,16]") + "}", d16)},
      {"offsets_one_item", st_file("{" + f32("a", "[4]", "[16]") + "}", d16)},
      {"offsets_empty", st_file("{" + f32("a", "[4]", "[]") + "}", d16)},
      {"offsets_negative", st_file("{" + f32("a", "[4]", "[-16,0]") + "}", d16)},
      {"offsets_float", st_file("{" + f32("a", "[4]", "[0,16.0]") + "}", d16)},
      {"offsets_strings", st_file("{" + f32("a", "[4]", "[\"0\",\"16\"]") + "}", d16)},
      {"offsets_huge", st_file("{" + f32("a", "[4]", "[18446744073709551600,0]") + "}", d16)},
      {"zero_size_inside_a_tensor",
       st_file("{" + f32("a", "[4]", "[0,16]") + "," + f32("e", "[0]", "[8,8]") + "}", d16)},
      {"zero_size_past_the_end",
       st_file("{" + f32("a", "[4]", "[0,16]") + "," + f32("e", "[0]", "[20,20]") + "}", d16)},
      {"size_mismatch_i32_2x2_in_4_bytes",
       st_file("{" + entry("a", "\"I32\"", "[2,2]", "[0,4]") + "}", "\x01\x02\x03\x04")},
      // 7. The data section.
      {"trailing_bytes_polyglot", st_file("{" + good + "}", d16 + "<html>")},
      {"trailing_single_byte", st_file("{" + good + "}", d16 + std::string(1, '\0'))},
      {"missing_last_byte", st_file("{" + good + "}", d16.substr(0, 15))},
      {"missing_half", st_file("{" + good + "}", d16.substr(0, 8))},
      {"missing_all_data", st_file("{" + good + "}")},
      {"data_without_tensors", st_file("{}", d16)},
  };
  // 8. Configurable bounds.
  SafetensorsLimits two_tensors;
  two_tensors.max_tensors = 2;
  c.push_back({"more_tensors_than_limit",
               st_file("{" + f32("a", "[1]", "[0,4]") + "," + f32("b", "[1]", "[4,8]") + "," +
                       f32("c", "[2]", "[8,16]") + "}", d16),
               ErrorCode::Corrupt, two_tensors});
  SafetensorsLimits small_header;
  small_header.max_header_bytes = 64;
  c.push_back({"header_above_configured_limit", st_file("{" + good + "}" + std::string(40, ' '), d16),
               ErrorCode::Corrupt, small_header});
  return c;
}

class MalformedSafetensors : public ::testing::TestWithParam<Malformed> {};

TEST_P(MalformedSafetensors, RejectedWithTheExpectedCodeEverywhere) {
  const Malformed& m = GetParam();
  const auto parsed = capture_error(
      [&] { parse_safetensors(as_byte_span(m.bytes), "mem:" + m.name, m.limits); });
  ASSERT_TRUE(parsed.threw) << "parse_safetensors accepted " << m.name;
  EXPECT_EQ(parsed.code, m.code) << error_code_name(parsed.code) << ": " << parsed.message;
  EXPECT_NE(parsed.message.find("mem:" + m.name), std::string::npos)
      << "the message does not name the file: " << parsed.message;

  TempDir dir;
  const fs::path path = dir / (m.name + ".safetensors");
  testing::write_file(path, m.bytes);
  for (ReadMode mode : {ReadMode::Mmap, ReadMode::Pread}) {
    SCOPED_TRACE(mode == ReadMode::Mmap ? "mmap" : "pread");
    const auto opened =
        capture_error([&] { SafetensorsReader::open(path, {.mode = mode, .limits = m.limits}); });
    ASSERT_TRUE(opened.threw) << "SafetensorsReader::open accepted " << m.name;
    EXPECT_EQ(opened.code, m.code) << error_code_name(opened.code) << ": " << opened.message;
    EXPECT_NE(opened.message.find(path.string()), std::string::npos)
        << "the message does not name the file: " << opened.message;
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, MalformedSafetensors, ::testing::ValuesIn(corpus()),
                         [](const auto& info) { return info.param.name; });

TEST(MalformedSafetensorsCorpus, HasAtLeastFortyDistinctCases) {
  const auto c = corpus();
  std::set<std::string> names, contents;
  for (const auto& m : c) {
    names.insert(m.name);
    contents.insert(m.bytes);
  }
  EXPECT_GE(c.size(), 40u);
  EXPECT_EQ(names.size(), c.size());
  EXPECT_GE(contents.size(), c.size() - 2);  // the two limit cases reuse valid bytes
}

// What is accepted at the edges: the decisions where the reference and the spec differ.
TEST(SafetensorsEdges, AcceptedInputs) {
  const std::string d16(16, '\x5A');
  struct Accepted {
    const char* name;
    std::string bytes;
    size_t tensors;
  };
  const std::vector<Accepted> cases = {
      {"empty_object", st_file("{}"), 0},
      {"padded_spaces", st_file("{}      "), 0},
      {"trailing_json_whitespace", st_file("{} \t\r\n  "), 0},
      // The reference reader dropped its "must start with {" check (commit 96305fc).
      {"leading_json_whitespace", st_file("\t\n{}\r "), 0},
      {"metadata_only", st_file(R"({"__metadata__":{"format":"pt"}})"), 0},
      // A zero-size tensor shares the offset of the next tensor: the reference writer emits this.
      {"zero_size_beside_data",
       st_file("{" + f32("e", "[0]", "[0,0]") + "," + f32("a", "[4]", "[0,16]") + "}", d16), 2},
      {"zero_size_at_the_end",
       st_file("{" + f32("a", "[4]", "[0,16]") + "," + f32("e", "[2,0]", "[16,16]") + "}", d16), 2},
      {"rank_at_limit", st_file("{" + entry("a", "\"U8\"", ones(64), "[0,1]") + "}", "\x01"), 1},
      {"f4_even_count", st_file("{" + entry("a", "\"F4\"", "[2]", "[0,1]") + "}", "\x21"), 1},
      {"out_of_order_entries",
       st_file("{" + f32("b", "[2]", "[8,16]") + "," + f32("a", "[2]", "[0,8]") + "}", d16), 2},
      {"escaped_name", st_file("{" + f32("\\u00e9\\n", "[4]", "[0,16]") + "}", d16), 1},
  };
  for (const auto& c : cases) {
    SafetensorsHeader h;
    const auto thrown =
        capture_error([&] { h = parse_safetensors(as_byte_span(c.bytes), c.name); });
    EXPECT_FALSE(thrown.threw) << c.name << ": " << thrown.message;
    EXPECT_EQ(h.tensors.size(), c.tensors) << c.name;
  }
  const auto h = parse_safetensors(
      as_byte_span(st_file("{" + f32("\\u00e9\\n", "[4]", "[0,16]") + "}", d16)), "esc");
  EXPECT_EQ(h.tensors.at(0).name, "\xC3\xA9\n");
}

TEST(SafetensorsEdges, HundredThousandEntriesParseInBoundedTime) {
  // The header-bloat attack within the 100 MB cap: must be accepted or rejected, not hang.
  std::string json = "{";
  for (int i = 0; i < 100'000; ++i) {
    if (i) json += ',';
    json += f32("t" + std::to_string(i), "[0]", "[0,0]");
  }
  json += "}";
  const std::string file = st_file(json);
  const SafetensorsHeader h = parse_safetensors(as_byte_span(file), "bloat");
  EXPECT_EQ(h.tensors.size(), 100'000u);
}

}  // namespace
}  // namespace ckptio
