// `ckptio inspect` and `ckptio verify` as a user runs them: the real binary on good and bad files,
// checking exit codes (0 ok, 1 bad input, 2 usage), the one-line error format
// `ckptio: error: <code>: <message>`, and the --json document's shape.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ckptio/safetensors.h"
#include "support/cli_run.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using json = nlohmann::ordered_json;

using CliRun = testing::CliResult;

CliRun ckptio_cli(const TempDir&, const std::vector<std::string>& args) {
  return testing::run_ckptio(args);
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

// A small model: three tensors, custom metadata.
fs::path write_model(const TempDir& dir) {
  static const std::string w(24, '\x01'), b(8, '\x02'), s(2, '\x03');
  const std::vector<NamedTensor> tensors = {
      {"layer.weight", {DType::F32, {2, 3}, bytes_of(w)}},
      {"layer.bias", {DType::I64, {1}, bytes_of(b)}},
      {"scale", {DType::BF16, {}, bytes_of(s)}},
  };
  SafetensorsWriteOptions options;
  options.metadata = Metadata{{"format", "pt"}, {"step", "7"}};
  const fs::path path = dir / "model.safetensors";
  save_safetensors(path, tensors, options);
  return path;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

std::string st_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

void expect_one_line_error(const CliRun& r, const std::string& code, const std::string& mentions) {
  EXPECT_FALSE(r.signaled);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const std::string prefix = "ckptio: error: " + code + ": ";
  EXPECT_EQ(r.err.rfind(prefix, 0), 0u) << "stderr: " << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n');
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  EXPECT_GT(r.err.size(), prefix.size() + 1) << "empty message";
  EXPECT_NE(r.err.find(mentions), std::string::npos) << "stderr does not name " << mentions << ": "
                                                     << r.err;
}

TEST(CliInspect, TextListsTensorsMetadataAndTotals) {
  TempDir dir;
  const fs::path model = write_model(dir);
  const CliRun r = ckptio_cli(dir, {"inspect", model.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  for (const char* s : {"layer.weight", "layer.bias", "scale", "F32", "I64", "BF16", "[2, 3]",
                        "[]", "step", "safetensors", "24"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << "missing '" << s << "' in:\n" << r.out;
  }
}

TEST(CliInspect, JsonShape) {
  TempDir dir;
  const fs::path model = write_model(dir);
  const CliRun r = ckptio_cli(dir, {"inspect", model.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json doc = json::parse(r.out);
  std::vector<std::string> keys;
  for (const auto& [k, v] : doc.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"format", "metadata", "tensors", "total_bytes"}));
  EXPECT_EQ(doc["format"], "safetensors");
  EXPECT_EQ(doc["metadata"], json({{"format", "pt"}, {"step", "7"}}));
  EXPECT_EQ(doc["total_bytes"], 34);
  ASSERT_TRUE(doc["tensors"].is_array());
  ASSERT_EQ(doc["tensors"].size(), 3u);
  // Data order of the reference layout: I64 first, then F32, then BF16.
  const json expected = json::parse(R"([
    {"name":"layer.bias","dtype":"I64","shape":[1],"nbytes":8,"data_offsets":[0,8]},
    {"name":"layer.weight","dtype":"F32","shape":[2,3],"nbytes":24,"data_offsets":[8,32]},
    {"name":"scale","dtype":"BF16","shape":[],"nbytes":2,"data_offsets":[32,34]}])");
  for (size_t i = 0; i < 3; ++i) {
    std::vector<std::string> tkeys;
    for (const auto& [k, v] : doc["tensors"][i].items()) tkeys.push_back(k);
    EXPECT_EQ(tkeys, (std::vector<std::string>{"name", "dtype", "shape", "nbytes", "data_offsets"}));
    EXPECT_EQ(doc["tensors"][i], expected[i]);
  }
}

TEST(CliInspect, JsonWithoutMetadataAndWithOddNames) {
  TempDir dir;
  static const std::string d(4, '\0');
  SafetensorsWriteOptions options;
  options.omit_metadata = true;
  const std::string odd = "名前 \"quoted\"\n\ttab";
  save_safetensors(dir / "odd.safetensors",
                   std::vector<NamedTensor>{{odd, {DType::F32, {1}, bytes_of(d)}}}, options);
  const CliRun r = ckptio_cli(dir, {"inspect", "--json", (dir / "odd.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json doc = json::parse(r.out);
  EXPECT_EQ(doc["metadata"], json::object());
  EXPECT_EQ(doc["tensors"][0]["name"], odd);
  EXPECT_EQ(doc["total_bytes"], 4);
}

TEST(CliVerify, GoodFileExitsZero) {
  TempDir dir;
  const fs::path model = write_model(dir);
  const CliRun r = ckptio_cli(dir, {"verify", model.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_FALSE(r.out.empty());
}

TEST(CliVerify, BadFilesExitOneWithOneLineErrors) {
  TempDir dir;
  const std::string good = testing::read_file(write_model(dir));
  struct Bad {
    const char* name;
    std::string bytes;
    const char* code;
  };
  const std::vector<Bad> bad = {
      {"empty", "", "corrupt"},
      {"short", "\x01\x02\x03", "corrupt"},
      {"truncated", good.substr(0, good.size() - 1), "corrupt"},
      {"trailing", good + "extra", "corrupt"},
      {"past_eof", le64(1 << 20) + "{}", "corrupt"},
      {"not_json", le64(8) + "garbage!", "corrupt"},
      {"overlap",
       st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
               R"("b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
               std::string(16, 'x')),
       "corrupt"},
      {"dtype",
       st_file(R"({"a":{"dtype":"F99","shape":[4],"data_offsets":[0,16]}})", std::string(16, 'x')),
       "unsupported"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.name);
    const fs::path path = dir / (std::string(b.name) + ".safetensors");
    testing::write_file(path, b.bytes);
    for (const char* command : {"verify", "inspect"}) {
      SCOPED_TRACE(command);
      const CliRun r = ckptio_cli(dir, {command, path.string()});
      expect_one_line_error(r, b.code, path.filename().string());
      EXPECT_EQ(r.out, "") << "printed output for a bad file";
    }
    const CliRun j = ckptio_cli(dir, {"inspect", "--json", path.string()});
    expect_one_line_error(j, b.code, path.filename().string());
  }
}

TEST(CliVerify, ErrorStaysOneLineWhenATensorNameHasANewline) {
  TempDir dir;
  // Size mismatch in a tensor whose name holds a newline: the message quotes the name.
  const std::string json_text = R"({"bad\nname":{"dtype":"I32","shape":[2,2],"data_offsets":[0,4]}})";
  const fs::path path = dir / "newline.safetensors";
  testing::write_file(path, st_file(json_text, "abcd"));
  const CliRun r = ckptio_cli(dir, {"verify", path.string()});
  expect_one_line_error(r, "corrupt", "newline.safetensors");
}

// Header lengths whose first two bytes read as a pickle protocol marker (80 02..80 05).
TEST(CliVerify, SafetensorsWithPickleLookingHeaderLengths) {
  TempDir dir;
  for (size_t length : {640, 896, 1152, 1408, 66176}) {
    std::string header = R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
    header.resize(length, ' ');
    const fs::path path = dir / ("h" + std::to_string(length) + ".safetensors");
    testing::write_file(path, st_file(header, "\x07"));
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"verify", path.string()}, {"inspect", path.string()},
             {"convert", path.string(), (dir / "out.safetensors").string()}}) {
      const CliRun r = ckptio_cli(dir, args);
      EXPECT_EQ(r.exit_code, 0) << args[0] << " " << length << ": " << r.err;
    }
  }
}

TEST(CliVerify, MissingFileIsNotFound) {
  TempDir dir;
  const CliRun r = ckptio_cli(dir, {"verify", (dir / "absent.safetensors").string()});
  expect_one_line_error(r, "not_found", "absent.safetensors");
  const CliRun i = ckptio_cli(dir, {"inspect", (dir / "absent.safetensors").string()});
  expect_one_line_error(i, "not_found", "absent.safetensors");
}

TEST(CliUsage, UsageErrorsExitTwo) {
  TempDir dir;
  const fs::path model = write_model(dir);
  const std::vector<std::vector<std::string>> usage = {
      {},
      {"frobnicate"},
      {"inspect"},
      {"verify"},
      {"inspect", "--bogus", model.string()},
      {"verify", model.string(), "extra-argument"},
  };
  for (const auto& args : usage) {
    const CliRun r = ckptio_cli(dir, args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_FALSE(r.signaled) << joined;
    EXPECT_EQ(r.exit_code, 2) << joined << "\nstderr: " << r.err;
    EXPECT_FALSE(r.err.empty()) << joined;
  }
  const CliRun help = ckptio_cli(dir, {"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("inspect"), std::string::npos);
}

TEST(CliUsage, UnknownCommandIsNamed) {
  TempDir dir;
  const CliRun r = ckptio_cli(dir, {"bogus", "x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'bogus'"), std::string::npos) << r.err;
}

TEST(CliUsage, VersionAndConvertHelp) {
  TempDir dir;
  const CliRun v = ckptio_cli(dir, {"--version"});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(v.out.rfind("ckptio ", 0), 0u) << v.out;
  EXPECT_NE(v.out.find('.'), std::string::npos) << v.out;
  const CliRun h = ckptio_cli(dir, {"convert", "--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("sharded folder"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("--dtype"), std::string::npos) << h.out;
}

}  // namespace
}  // namespace ckptio
