// detect_file_format decides by structure: a safetensors file is never taken for a pickle because
// its header length happens to start with a pickle protocol marker (80 02..80 05).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "ckptio/io.h"
#include "ckptio/load.h"

namespace ckptio {
namespace {

// A file held in memory, so that tens of thousands of layouts are checked without disk writes.
class MemoryFile : public io::ReadableFile {
 public:
  explicit MemoryFile(std::string bytes) : bytes_(std::move(bytes)) {}
  const std::filesystem::path& path() const override { return path_; }
  uint64_t size() const override { return bytes_.size(); }
  void read_exact(uint64_t offset, std::span<std::byte> dst) const override {
    ASSERT_LE(offset + dst.size(), bytes_.size());
    std::memcpy(dst.data(), bytes_.data() + offset, dst.size());
  }
  const std::string& bytes_for_test() const { return bytes_; }

 private:
  std::filesystem::path path_ = "memory";
  std::string bytes_;
};

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A valid safetensors file whose header is exactly `header_length` bytes (JSON padded with spaces,
// as the reference writer pads), holding one 1-byte tensor when the header has room for it.
std::string safetensors_with_header_length(size_t header_length) {
  static const std::string with_tensor = R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  const bool tensor = header_length >= with_tensor.size();
  std::string json = tensor ? with_tensor : "{}";
  json.resize(header_length, ' ');
  return le64(header_length) + json + (tensor ? std::string(1, '\x07') : std::string());
}

TEST(DetectFileFormat, EveryHeaderLengthUpTo70000IsSafetensors) {
  for (size_t length = 2; length <= 70'000; ++length) {
    const MemoryFile file(safetensors_with_header_length(length));
    ASSERT_EQ(detect_file_format(file), FileFormat::Safetensors) << "header length " << length;
  }
  // The lengths the bug report found: their first two bytes read as "80 02".."80 05".
  for (size_t length : {640, 896, 1152, 1408, 66176}) {
    const MemoryFile file(safetensors_with_header_length(length));
    EXPECT_EQ(static_cast<unsigned char>(file.bytes_for_test()[0]), 0x80);
  }
}

TEST(DetectFileFormat, TorchFilesByTheirMagic) {
  const std::string legacy_magic("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e", 15);
  EXPECT_EQ(detect_file_format(MemoryFile(legacy_magic + "\x80\x02}q\x00.")), FileFormat::TorchLegacy);
  EXPECT_EQ(detect_file_format(MemoryFile(std::string("PK\x03\x04", 4) + std::string(40, '\0'))),
            FileFormat::TorchZip);
  // A bare pickle (protocol marker without torch's magic number record) is not a torch file.
  EXPECT_EQ(detect_file_format(MemoryFile(std::string("\x80\x02}q\x00.", 6))), FileFormat::Unknown);
  // Nor is a broken safetensors header whose length bytes start like a pickle.
  std::string broken = safetensors_with_header_length(640);
  broken[8] = '[';
  EXPECT_EQ(detect_file_format(MemoryFile(broken)), FileFormat::Unknown);
  EXPECT_EQ(detect_file_format(MemoryFile("")), FileFormat::Unknown);
}

}  // namespace
}  // namespace ckptio
