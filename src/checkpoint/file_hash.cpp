#include "checkpoint/file_hash.h"

#include <xxhash.h>

#include <algorithm>
#include <vector>

#include "ckptio/error.h"

namespace ckptio::checkpoint {

struct Xxh3Hasher::State {
  XXH3_state_t* s = nullptr;
};

Xxh3Hasher::Xxh3Hasher() : state_(std::make_unique<State>()) {
  state_->s = XXH3_createState();
  if (state_->s == nullptr) throw Error(ErrorCode::Internal, "XXH3_createState failed");
  XXH3_128bits_reset(state_->s);
}

Xxh3Hasher::~Xxh3Hasher() { XXH3_freeState(state_->s); }

void Xxh3Hasher::update(std::span<const std::byte> bytes) {
  if (!bytes.empty()) XXH3_128bits_update(state_->s, bytes.data(), bytes.size());
}

static std::string to_hex(XXH128_hash_t h) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, h);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(32);
  for (unsigned char c : canonical.digest) {
    s += kHex[c >> 4];
    s += kHex[c & 15];
  }
  return s;
}

std::string Xxh3Hasher::hex() const { return to_hex(XXH3_128bits_digest(state_->s)); }

std::string xxh3_128_hex(std::span<const std::byte> bytes) {
  return to_hex(XXH3_128bits(bytes.data(), bytes.size()));
}

std::string xxh3_128_hex(std::string_view text) {
  return xxh3_128_hex(std::as_bytes(std::span(text.data(), text.size())));
}

std::string xxh3_128_file(io::Env& env, const std::filesystem::path& path) {
  auto file = env.open_read(path);
  const uint64_t size = file->size();
  constexpr uint64_t kChunk = 8u << 20;
  std::vector<std::byte> buffer(static_cast<size_t>(std::min(size, kChunk)));
  Xxh3Hasher hasher;
  for (uint64_t offset = 0; offset < size;) {
    const uint64_t n = std::min(kChunk, size - offset);
    std::span<std::byte> dst(buffer.data(), static_cast<size_t>(n));
    file->read_exact(offset, dst);
    hasher.update(dst);
    offset += n;
  }
  return hasher.hex();
}

}  // namespace ckptio::checkpoint
