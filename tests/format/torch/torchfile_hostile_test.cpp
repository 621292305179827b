// Hostile and broken files: each fails with a typed error, nothing is executed, nothing crashes.
#include <gtest/gtest.h>

#include <cstring>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"
#include "format/torch/torch_fixtures.h"

namespace ckptio::pt {
namespace {

namespace fs = std::filesystem;

ErrorCode load_error(const fs::path& path, std::string* message = nullptr) {
  try {
    load_torch_file(path);
  } catch (const Error& e) {
    if (message) *message = e.message();
    return e.code();
  }
  ADD_FAILURE() << path << " loaded without error";
  return ErrorCode::Internal;
}

struct HostileCase {
  const char* file;
  ErrorCode code;
  const char* message_part;  // must appear in the message
};

class HostileFile : public ::testing::TestWithParam<HostileCase> {};

TEST_P(HostileFile, FailsWithTypedErrorAndNoSideEffect) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const HostileCase& c = GetParam();
  ASSERT_TRUE(fs::exists(fixtures / c.file));
  std::string message;
  EXPECT_EQ(load_error(fixtures / c.file, &message), c.code) << message;
  EXPECT_NE(message.find(c.message_part), std::string::npos) << message;
  EXPECT_NE(message.find(c.file), std::string::npos) << "message does not name the file: " << message;
  // The payloads would create this file if anything had run.
  EXPECT_FALSE(fs::exists(fixtures / "PWNED"));
}

INSTANTIATE_TEST_SUITE_P(
    Files, HostileFile,
    ::testing::Values(
        HostileCase{"evil_system.pt", ErrorCode::Unsafe, "'posix.system'"},
        HostileCase{"evil_system_p4.pt", ErrorCode::Unsafe, "'posix.system'"},
        HostileCase{"evil_eval.pt", ErrorCode::Unsafe, "'builtins.eval'"},
        HostileCase{"evil_inst.pt", ErrorCode::Unsafe, "INST"},
        HostileCase{"evil_getattr.pt", ErrorCode::Unsafe, "'builtins.getattr'"},
        HostileCase{"evil_raw.pkl", ErrorCode::Unsafe, "'posix.system'"},
        HostileCase{"short_storage.pt", ErrorCode::Corrupt, "declares 8 elements"},
        HostileCase{"long_storage.pt", ErrorCode::Corrupt, "declares 2 elements"},
        HostileCase{"view_past_storage.pt", ErrorCode::Corrupt, "reaches past"},
        HostileCase{"view_past_storage_2d.pt", ErrorCode::Corrupt, "reaches past"},
        HostileCase{"negative_stride.pt", ErrorCode::Corrupt, "negative"},
        HostileCase{"negative_offset.pt", ErrorCode::Corrupt, "negative"},
        HostileCase{"huge_numel.pt", ErrorCode::Corrupt, "storage record"},
        HostileCase{"huge_expand.pt", ErrorCode::Corrupt, "expanded views"},
        HostileCase{"size_not_ints.pt", ErrorCode::Corrupt, "not an int"},
        HostileCase{"missing_record.pt", ErrorCode::Corrupt, "'data/9' is missing"},
        HostileCase{"bad_pid_tag.pt", ErrorCode::Corrupt, "('storage', ...)"},
        HostileCase{"bad_location.pt", ErrorCode::Corrupt, "location"},
        HostileCase{"storage_not_allowed.pt", ErrorCode::Corrupt, "no storage class"},
        HostileCase{"compressed.pt", ErrorCode::Unsupported, "compressed"},
        HostileCase{"version0.pt", ErrorCode::Unsupported, "version 0"},
        HostileCase{"version999.pt", ErrorCode::Unsupported, "version 999"},
        HostileCase{"no_version.pt", ErrorCode::Corrupt, "version"},
        HostileCase{"byteorder_garbage.pt", ErrorCode::Corrupt, "byteorder"},
        HostileCase{"outside_prefix.pt", ErrorCode::Corrupt, "outside the top folder"},
        HostileCase{"dotdot.pt", ErrorCode::Corrupt, ".."},
        HostileCase{"duplicate.pt", ErrorCode::Corrupt, "appears twice"},
        HostileCase{"script.pt", ErrorCode::Unsupported, "TorchScript"},
        HostileCase{"legacy_tar.pt", ErrorCode::Unsupported, "tar"},
        HostileCase{"legacy_huge.pt", ErrorCode::Corrupt, "runs past the end"},
        // Small files whose shared objects expand when walked at every place they appear.
        HostileCase{"deep_memo_chains.pt", ErrorCode::Corrupt, "nested deeper than 512"},
        HostileCase{"dict_bomb.pt", ErrorCode::Unsafe, "expands to more than"},
        HostileCase{"transposed_views.pt", ErrorCode::Unsafe, "tensor views"},
        HostileCase{"bytearray_bomb.pt", ErrorCode::Unsafe, "bytes of strings"}),
    [](const auto& info) {
      std::string name = info.param.file;
      for (char& ch : name) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return name;
    });

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST(TorchFileHostile, EveryTruncationFails) {
  CKPTIO_NEED_TORCH_FIXTURES();
  for (const char* name : {"model.pt", "legacy.pt"}) {
    const std::string full = ckptio::testing::read_file(fixtures / name);
    // Every cut in the last 4 KiB (where the central directory and the end record live) and a
    // spread of cuts elsewhere.
    for (size_t keep = 0; keep < full.size(); keep += (keep + 4096 >= full.size() ? 1 : 97)) {
      const std::string cut = full.substr(0, keep);
      try {
        parse_torch_bytes(as_bytes(cut), name, nullptr);
        ADD_FAILURE() << name << " cut to " << keep << " of " << full.size() << " bytes loaded";
      } catch (const Error& e) {
        EXPECT_TRUE(e.code() == ErrorCode::Corrupt || e.code() == ErrorCode::Unsupported)
            << keep << ": " << e.what();
      }
    }
  }
}

TEST(TorchFileHostile, FlippedBitsFailOrChangeNothing) {
  CKPTIO_NEED_TORCH_FIXTURES();
  const std::string original = ckptio::testing::read_file(fixtures / "model.pt");
  const TorchFile reference = parse_torch_bytes(as_bytes(original), "model.pt", nullptr);
  const auto want = flatten_tensors(reference.root);
  size_t detected = 0, flips = 0;
  for (size_t pos = 0; pos < original.size(); pos += 7) {
    std::string bad = original;
    bad[pos] = static_cast<char>(bad[pos] ^ (1 << (pos % 8)));
    ++flips;
    try {
      const TorchFile file = parse_torch_bytes(as_bytes(bad), "model.pt", nullptr);
      // Undetected flips may only touch bytes nobody reads (alignment padding, timestamps).
      const auto got = flatten_tensors(file.root);
      ASSERT_EQ(got.size(), want.size()) << "flip at " << pos;
      for (const auto& [name, t] : want) {
        const Tensor a = t.contiguous(), b = got.at(name).contiguous();
        ASSERT_EQ(a.nbytes(), b.nbytes());
        EXPECT_EQ(std::memcmp(a.bytes().data(), b.bytes().data(), a.nbytes()), 0)
            << "flip at byte " << pos << " changed " << name << " silently";
      }
    } catch (const Error& e) {
      ++detected;
      EXPECT_NE(e.code(), ErrorCode::Internal) << e.what();
    }
  }
  // Tensor data and the pickle are most of the file and are CRC-checked.
  EXPECT_GT(detected * 2, flips);
}

TEST(TorchFileHostile, CrcCheckCanBeTurnedOffButBoundsChecksCannot) {
  CKPTIO_NEED_TORCH_FIXTURES();
  std::string bytes = ckptio::testing::read_file(fixtures / "crafted_ok.pt");
  const size_t at = bytes.find(std::string("\x00\x00\x80\x3f", 4));  // 1.0f in data/0
  ASSERT_NE(at, std::string::npos);
  bytes[at + 2] = 0x00;  // 1.0f -> 2.0f
  bytes[at + 3] = 0x40;
  try {
    parse_torch_bytes(as_bytes(bytes), "flipped.pt", nullptr);
    FAIL() << "CRC mismatch not detected";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt);
    EXPECT_NE(e.message().find("CRC"), std::string::npos) << e.message();
  }
  TorchLoadOptions no_crc;
  no_crc.verify_crc = false;
  const TorchFile file = parse_torch_bytes(as_bytes(bytes), "flipped.pt", nullptr, no_crc);
  float v;
  std::memcpy(&v, select_path(file.root, "t").as_tensor().contiguous().bytes().data(), 4);
  EXPECT_EQ(v, 2.0f);
}

TEST(TorchFileHostile, NotATorchFile) {
  for (const std::string& bytes : {std::string(), std::string("hello world"),
                                  std::string("PYTORCH1\0\0\0\0", 12), std::string("PK\x05\x06", 4)}) {
    try {
      parse_torch_bytes(as_bytes(bytes), "junk", nullptr);
      ADD_FAILURE() << "accepted " << bytes.size() << " junk bytes";
    } catch (const Error& e) {
      EXPECT_TRUE(e.code() == ErrorCode::Corrupt || e.code() == ErrorCode::Unsupported) << e.what();
    }
  }
}

}  // namespace
}  // namespace ckptio::pt
