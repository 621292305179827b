// Helpers for the safetensors tests: raw file assembly and error-code capture.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/safetensors.h"

namespace ckptio {
// gtest prints codes by name.
inline void PrintTo(ErrorCode code, std::ostream* os) { *os << error_code_name(code); }
}  // namespace ckptio

namespace ckptio::testing {

// The 8-byte little-endian length N.
inline std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A file whose N is the exact header length: le64(len) + header + data.
inline std::string st_file(std::string_view header, std::string_view data = {}) {
  return le64(header.size()) + std::string(header) + std::string(data);
}

inline std::span<const std::byte> as_byte_span(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

// The ckptio::ErrorCode `f` throws; fails the test when it throws nothing or something else.
struct Thrown {
  bool threw = false;
  ErrorCode code = ErrorCode::Internal;
  std::string message;
};

inline Thrown capture_error(const std::function<void()>& f) {
  Thrown t;
  try {
    f();
  } catch (const Error& e) {
    t.threw = true;
    t.code = e.code();
    t.message = e.message();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-ckptio exception: " << e.what();
    t.threw = true;
    t.code = ErrorCode::Internal;
    t.message = e.what();
  }
  return t;
}

inline std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng() & 0xFF);
  return v;
}

inline std::string bytes_to_string(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace ckptio::testing
