// The CRC-32 zip records carry (reflected IEEE polynomial, as gzip and zlib compute it), through
// ISA-L, which picks carry-less-multiply code at run time: checking a large checkpoint's records
// costs a fraction of copying them instead of more than the copy.
#pragma once

#include <isa-l/crc.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace ckptio::pt {

// zlib's conventions: start from 0, pass the previous result to continue over the next bytes.
inline uint32_t zip_crc32(uint32_t crc, std::span<const std::byte> bytes) {
  return crc32_gzip_refl(crc, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

}  // namespace ckptio::pt
