// Incremental SHA-256 (OpenSSL EVP), used to check LFS downloads against their etag.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace ckptio::hub {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::span<const std::byte> data);
  // Lower-case hex of the digest; the object is reset and can hash again.
  std::string hex_digest();
  void reset();

 private:
  void* ctx_;  // EVP_MD_CTX*
};

}  // namespace ckptio::hub
