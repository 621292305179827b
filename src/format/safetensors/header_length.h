// Internal: the 8-byte length prefix, shared by the in-memory parser and the file reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "ckptio/safetensors.h"

namespace ckptio {

// N from the first 8 bytes, checked against the file size and the header limit.
// Throws Error(Corrupt) naming `source`.
uint64_t checked_header_length(std::span<const std::byte> first8, uint64_t file_size,
                               std::string_view source, const SafetensorsLimits& limits);

}  // namespace ckptio
