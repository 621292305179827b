// Box arithmetic on row-major tensors: the pure geometry behind saving flat ranges as boxes and
// reading the intersection of a stored chunk with a wanted box.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "ckptio/dist.h"

namespace ckptio::dist::detail {

uint64_t box_volume(const Box& box);

// True when every dimension of `box` lies inside [0, shape) (rank must match). No overflow.
bool box_inside(const Box& box, std::span<const int64_t> shape);

// The intersection of two boxes of the same rank; nullopt-like: returns false when empty.
bool intersect(const Box& a, const Box& b, Box& out);

// A flat range of a row-major tensor of `shape`, as the few boxes it covers, in flat order. Each
// box's elements are one contiguous run of the range; `flat_begin` is where it starts (element
// index of the flattened tensor). [begin, end) must lie within the tensor.
struct FlatBox {
  Box box;
  uint64_t flat_begin = 0;
};
std::vector<FlatBox> flat_range_boxes(std::span<const int64_t> shape, uint64_t begin, uint64_t end);

// The contiguous runs that copy the elements of `region` (inside both boxes) from a row-major
// buffer holding box `src` to a row-major buffer holding box `dst`: calls run(src_elem, dst_elem,
// elems) with element offsets into the two buffers, in row-major order of `region`.
void for_each_run(const Box& src, const Box& dst, const Box& region,
                  const std::function<void(uint64_t, uint64_t, uint64_t)>& run);

// A box for a whole tensor.
Box whole(std::span<const int64_t> shape);

}  // namespace ckptio::dist::detail
