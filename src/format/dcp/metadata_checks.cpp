#include "format/dcp/metadata_checks.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "ckptio/error.h"

namespace ckptio::dcp {

namespace {

bool empty_box(const Shape& sizes) {
  return std::any_of(sizes.begin(), sizes.end(), [](int64_t s) { return s == 0; });
}

// The boxes share at least one element.
bool overlap(const DcpChunk& a, const DcpChunk& b) {
  if (empty_box(a.sizes) || empty_box(b.sizes)) return false;
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    if (a.offsets[d] >= b.offsets[d] + b.sizes[d] || b.offsets[d] >= a.offsets[d] + a.sizes[d]) return false;
  }
  return true;
}

}  // namespace

void check_chunks(const DcpTensor& t, std::string_view source) {
  auto fail = [&](size_t i, const std::string& msg) {
    throw Error(ErrorCode::Corrupt, std::string(source) + ": tensor '" + t.name + "' chunk " +
                                        std::to_string(i) + ": " + msg);
  };
  const uint64_t item = static_cast<uint64_t>(dtype_bits(t.dtype) / 8);
  uint64_t numel = 1;
  for (int64_t s : t.shape) {
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(s), &numel)) {
      throw Error(ErrorCode::Corrupt, std::string(source) + ": tensor '" + t.name + "': shape " +
                                          shape_to_string(t.shape) + " overflows");
    }
  }
  uint64_t nbytes;
  if (__builtin_mul_overflow(numel, item, &nbytes)) {
    throw Error(ErrorCode::Corrupt, std::string(source) + ": tensor '" + t.name + "': byte size overflows");
  }
  uint64_t covered = 0;
  for (size_t i = 0; i < t.chunks.size(); ++i) {
    const DcpChunk& c = t.chunks[i];
    if (c.offsets.size() != t.shape.size() || c.sizes.size() != t.shape.size()) {
      fail(i, "rank differs from the tensor's (" + shape_to_string(c.offsets) + " + " +
                  shape_to_string(c.sizes) + " in " + shape_to_string(t.shape) + ")");
    }
    uint64_t volume = 1;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      // Both are at most the tensor's size, so neither the sum nor the product below overflows.
      if (c.offsets[d] > t.shape[d] || c.sizes[d] > t.shape[d] - c.offsets[d]) {
        fail(i, "box " + shape_to_string(c.offsets) + " + " + shape_to_string(c.sizes) +
                    " reaches outside the global shape " + shape_to_string(t.shape));
      }
      volume *= static_cast<uint64_t>(c.sizes[d]);
    }
    if (volume * item > c.item.length) {
      fail(i, "its " + std::to_string(volume * item) + " bytes cannot fit its " +
                  std::to_string(c.item.length) + "-byte item in '" + c.item.file + "'");
    }
    if (__builtin_add_overflow(covered, volume, &covered)) fail(i, "chunk volumes overflow");
  }
  // Overlaps: a sweep along dimension 0 (row-sharded tensors compare each chunk with its
  // neighbours only, not with every other chunk).
  if (!t.shape.empty()) {
    std::vector<size_t> order(t.chunks.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return t.chunks[a].offsets[0] < t.chunks[b].offsets[0]; });
    for (size_t x = 0; x < order.size(); ++x) {
      const DcpChunk& a = t.chunks[order[x]];
      for (size_t y = x + 1; y < order.size(); ++y) {
        const DcpChunk& b = t.chunks[order[y]];
        if (b.offsets[0] >= a.offsets[0] + a.sizes[0]) break;
        if (overlap(a, b)) {
          fail(order[y], "box " + shape_to_string(b.offsets) + " + " + shape_to_string(b.sizes) +
                             " overlaps chunk " + std::to_string(order[x]));
        }
      }
    }
  } else if (t.chunks.size() > 1) {
    fail(1, "a 0-d tensor saved in more than one chunk");
  }
  if (covered != numel) {
    throw Error(ErrorCode::Corrupt, std::string(source) + ": tensor '" + t.name + "': its chunks cover " +
                                        std::to_string(covered) + " of its " + std::to_string(numel) +
                                        " elements");
  }
}

void copy_intersection(const std::byte* src, const Shape& src_origin, const Shape& src_shape,
                       std::byte* dst, const Shape& dst_origin, const Shape& dst_shape, size_t item) {
  const size_t rank = src_shape.size();
  if (rank == 0) {
    std::memcpy(dst, src, item);
    return;
  }
  Shape lo(rank), hi(rank);
  for (size_t d = 0; d < rank; ++d) {
    lo[d] = std::max(src_origin[d], dst_origin[d]);
    hi[d] = std::min(src_origin[d] + src_shape[d], dst_origin[d] + dst_shape[d]);
    if (hi[d] <= lo[d]) return;
  }
  // Row-major strides, in elements.
  std::vector<uint64_t> ss(rank, 1), ds(rank, 1);
  for (size_t d = rank - 1; d > 0; --d) {
    ss[d - 1] = ss[d] * static_cast<uint64_t>(src_shape[d]);
    ds[d - 1] = ds[d] * static_cast<uint64_t>(dst_shape[d]);
  }
  const size_t row = static_cast<size_t>(hi[rank - 1] - lo[rank - 1]) * item;
  Shape idx = lo;
  while (true) {
    uint64_t so = 0, dof = 0;
    for (size_t d = 0; d < rank; ++d) {
      so += static_cast<uint64_t>(idx[d] - src_origin[d]) * ss[d];
      dof += static_cast<uint64_t>(idx[d] - dst_origin[d]) * ds[d];
    }
    std::memcpy(dst + dof * item, src + so * item, row);
    // Next row: count up the index over dimensions 0 .. rank-2.
    size_t d = rank - 1;
    while (d > 0) {
      --d;
      if (++idx[d] < hi[d]) break;
      idx[d] = lo[d];
      if (d == 0) return;
    }
    if (rank == 1) return;
  }
}

}  // namespace ckptio::dcp
