// xxh3-128 of file contents, as the manifest stores it: the canonical (big-endian) digest in lower
// case hex, the same text `xxh128sum` prints.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "ckptio/io.h"

namespace ckptio::checkpoint {

// Streaming hasher; feed the bytes of a file in order.
class Xxh3Hasher {
 public:
  Xxh3Hasher();
  ~Xxh3Hasher();
  Xxh3Hasher(const Xxh3Hasher&) = delete;
  Xxh3Hasher& operator=(const Xxh3Hasher&) = delete;

  void update(std::span<const std::byte> bytes);
  // Hex digest of everything fed so far.
  std::string hex() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string xxh3_128_hex(std::span<const std::byte> bytes);
std::string xxh3_128_hex(std::string_view text);

// Hashes a whole file read through the Env in large chunks.
std::string xxh3_128_file(io::Env& env, const std::filesystem::path& path);

}  // namespace ckptio::checkpoint
