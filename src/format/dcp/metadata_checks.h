// The rules a DCP tensor's chunks must follow before any of its bytes are read, and the box
// arithmetic the reader assembles tensors with.
#pragma once

#include <cstddef>
#include <string_view>

#include "ckptio/dcp.h"

namespace ckptio::dcp {

inline constexpr size_t kMaxRank = 64;

// Every chunk has the tensor's rank and lies inside its shape; no two chunks overlap; together
// they cover the tensor exactly (volumes add up); each item is at least as long as its chunk's
// bytes. Error(Corrupt) naming the tensor and the chunk otherwise.
void check_chunks(const DcpTensor& t, std::string_view source);

// Copies the intersection of the box [src_origin, src_origin + src_shape) (contiguous row-major
// bytes at `src`) with the box [dst_origin, dst_origin + dst_shape) into `dst`. Boxes are in the
// global tensor's coordinates; `item` is the element size.
void copy_intersection(const std::byte* src, const Shape& src_origin, const Shape& src_shape,
                       std::byte* dst, const Shape& dst_origin, const Shape& dst_shape, size_t item);

}  // namespace ckptio::dcp
