// ShardedTensor: the factories and the checks every save and load applies to an item.
#include <algorithm>
#include <string>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "dist/box.h"
#include "dist/plan.h"

namespace ckptio::dist {

ShardedTensor ShardedTensor::replicated(std::string name, DType dtype, Shape global_shape) {
  ShardedTensor t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.global_shape = std::move(global_shape);
  return t;
}

ShardedTensor ShardedTensor::block(std::string name, DType dtype, Shape global_shape,
                                   std::vector<int64_t> offsets, Shape local_shape) {
  ShardedTensor t = replicated(std::move(name), dtype, std::move(global_shape));
  t.placement = Placement::Block;
  t.box = Box{std::move(offsets), std::move(local_shape)};
  return t;
}

ShardedTensor ShardedTensor::flat(std::string name, DType dtype, Shape global_shape,
                                  uint64_t begin, uint64_t length) {
  ShardedTensor t = replicated(std::move(name), dtype, std::move(global_shape));
  t.placement = Placement::FlatRange;
  t.flat_begin = begin;
  t.flat_length = length;
  return t;
}

ShardedTensor ShardedTensor::zero_partition(std::string name, DType dtype, Shape global_shape,
                                            int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world) {
    throw Error(ErrorCode::InvalidArgument, "rank " + std::to_string(rank) + " of a world of " +
                                                std::to_string(world) + " for tensor '" + name + "'");
  }
  const uint64_t numel = shape_numel(global_shape);
  const auto w = static_cast<uint64_t>(world);
  const uint64_t padded = numel + (w - numel % w) % w;  // Open-Sora's (W - n % W) % W
  const uint64_t part = padded / w;
  return flat(std::move(name), dtype, std::move(global_shape), part * static_cast<uint64_t>(rank),
              part);
}

uint64_t ShardedTensor::local_nbytes() const {
  switch (placement) {
    case Placement::Replicated: return tensor_nbytes(dtype, global_shape);
    case Placement::Block: return tensor_nbytes(dtype, box.shape);
    case Placement::FlatRange: {
      const Shape flat{static_cast<int64_t>(flat_length)};
      return tensor_nbytes(dtype, flat);
    }
  }
  return 0;
}

namespace detail {

void check_item(const ShardedTensor& t, size_t nbytes, std::string_view what) {
  const std::string tn = std::string(what) + " '" + printable(t.name) + "'";
  if (t.name.empty()) throw Error(ErrorCode::InvalidArgument, std::string(what) + " with an empty name");
  if (t.global_shape.size() > 64) throw Error(ErrorCode::InvalidArgument, tn + " has more than 64 dimensions");
  uint64_t numel = 0;
  try {
    numel = shape_numel(t.global_shape);
    (void)tensor_nbytes(t.dtype, t.global_shape);
  } catch (const Error& e) {
    throw Error(ErrorCode::InvalidArgument, tn + ": " + e.message());
  }
  if (t.placement != Placement::Replicated && dtype_bits(t.dtype) % 8 != 0) {
    throw Error(ErrorCode::InvalidArgument,
                tn + " of dtype " + std::string(dtype_name(t.dtype)) +
                    " must be replicated (sub-byte elements cannot be split into boxes)");
  }
  if (t.placement == Placement::Block && !box_inside(t.box, t.global_shape)) {
    std::string b = "offsets " + shape_to_string(t.box.offsets) + " shape " + shape_to_string(t.box.shape);
    throw Error(ErrorCode::InvalidArgument,
                tn + ": box " + b + " is not inside the global shape " + shape_to_string(t.global_shape));
  }
  if (t.placement == Placement::FlatRange) {
    // A padded partition may start past the end (it is all padding), but not absurdly.
    if (t.flat_begin > (uint64_t{1} << 62) || t.flat_length > (uint64_t{1} << 62)) {
      throw Error(ErrorCode::InvalidArgument,
                  tn + ": flat range of " + std::to_string(t.flat_length) + " elements at " +
                      std::to_string(t.flat_begin) + " for " + std::to_string(numel) + " elements");
    }
  }
  const uint64_t want = t.local_nbytes();
  if (nbytes != want) {
    throw Error(ErrorCode::InvalidArgument, tn + ": the buffer has " + std::to_string(nbytes) +
                                                " bytes, the shard needs " + std::to_string(want));
  }
}

std::vector<Region> regions_of(const ShardedTensor& t) {
  std::vector<Region> out;
  const uint64_t el_bits = static_cast<uint64_t>(dtype_bits(t.dtype));
  switch (t.placement) {
    case Placement::Replicated:
      if (shape_numel(t.global_shape) > 0) {
        out.push_back({whole(t.global_shape), 0, tensor_nbytes(t.dtype, t.global_shape)});
      }
      break;
    case Placement::Block:
      if (box_volume(t.box) > 0) out.push_back({t.box, 0, tensor_nbytes(t.dtype, t.box.shape)});
      break;
    case Placement::FlatRange: {
      const uint64_t numel = shape_numel(t.global_shape);
      const uint64_t end = std::min(numel, t.flat_begin + t.flat_length);
      if (t.flat_begin >= end) break;  // all padding
      for (FlatBox& fb : flat_range_boxes(t.global_shape, t.flat_begin, end)) {
        const uint64_t at = (fb.flat_begin - t.flat_begin) * el_bits / 8;
        const uint64_t len = box_volume(fb.box) * el_bits / 8;
        out.push_back({std::move(fb.box), at, len});
      }
      break;
    }
  }
  return out;
}

}  // namespace detail
}  // namespace ckptio::dist
