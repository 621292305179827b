#include "dist/box.h"

#include <algorithm>

namespace ckptio::dist::detail {

uint64_t box_volume(const Box& box) {
  uint64_t v = 1;
  for (int64_t d : box.shape) v *= static_cast<uint64_t>(d);
  return v;
}

bool box_inside(const Box& box, std::span<const int64_t> shape) {
  if (box.offsets.size() != shape.size() || box.shape.size() != shape.size()) return false;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (box.offsets[d] < 0 || box.shape[d] < 0 || box.shape[d] > shape[d]) return false;
    if (box.offsets[d] > shape[d] - box.shape[d]) return false;
  }
  return true;
}

bool intersect(const Box& a, const Box& b, Box& out) {
  const size_t n = a.offsets.size();
  out.offsets.resize(n);
  out.shape.resize(n);
  for (size_t d = 0; d < n; ++d) {
    const int64_t lo = std::max(a.offsets[d], b.offsets[d]);
    const int64_t hi = std::min(a.offsets[d] + a.shape[d], b.offsets[d] + b.shape[d]);
    if (hi <= lo) return false;
    out.offsets[d] = lo;
    out.shape[d] = hi - lo;
  }
  return true;
}

Box whole(std::span<const int64_t> shape) {
  return Box{std::vector<int64_t>(shape.size(), 0), Shape(shape.begin(), shape.end())};
}

namespace {

// [begin, end) relative to the sub-tensor at `prefix` (dims < prefix.size() fixed).
void split(std::span<const int64_t> shape, std::vector<int64_t>& prefix, uint64_t base,
           uint64_t begin, uint64_t end, std::vector<FlatBox>& out) {
  const size_t d = prefix.size();
  uint64_t stride = 1;
  for (size_t k = d + 1; k < shape.size(); ++k) stride *= static_cast<uint64_t>(shape[k]);
  auto emit_rows = [&](uint64_t row_begin, uint64_t row_end) {
    FlatBox fb;
    fb.box.offsets = prefix;
    fb.box.offsets.push_back(static_cast<int64_t>(row_begin));
    fb.box.shape.assign(prefix.size(), 1);
    fb.box.shape.push_back(static_cast<int64_t>(row_end - row_begin));
    for (size_t k = d + 1; k < shape.size(); ++k) {
      fb.box.offsets.push_back(0);
      fb.box.shape.push_back(shape[k]);
    }
    fb.flat_begin = base + row_begin * stride;
    out.push_back(std::move(fb));
  };
  auto descend = [&](uint64_t row, uint64_t b, uint64_t e) {
    prefix.push_back(static_cast<int64_t>(row));
    split(shape, prefix, base + row * stride, b, e, out);
    prefix.pop_back();
  };
  if (begin % stride == 0 && end % stride == 0) {
    emit_rows(begin / stride, end / stride);
    return;
  }
  const uint64_t first = begin / stride;
  const uint64_t last = (end - 1) / stride;
  if (first == last) {
    descend(first, begin - first * stride, end - first * stride);
    return;
  }
  uint64_t mid_begin = first;
  if (begin % stride != 0) {
    descend(first, begin % stride, stride);
    mid_begin = first + 1;
  }
  const uint64_t mid_end = end % stride != 0 ? last : last + 1;
  if (mid_begin < mid_end) emit_rows(mid_begin, mid_end);
  if (end % stride != 0) descend(last, 0, end % stride);
}

}  // namespace

std::vector<FlatBox> flat_range_boxes(std::span<const int64_t> shape, uint64_t begin, uint64_t end) {
  std::vector<FlatBox> out;
  if (begin >= end) return out;
  if (shape.empty()) {
    out.push_back({Box{}, 0});
    return out;
  }
  std::vector<int64_t> prefix;
  split(shape, prefix, 0, begin, end, out);
  return out;
}

void for_each_run(const Box& src, const Box& dst, const Box& region,
                  const std::function<void(uint64_t, uint64_t, uint64_t)>& run) {
  const size_t n = region.shape.size();
  if (n == 0) {
    run(0, 0, 1);
    return;
  }
  // Trailing dimensions the region spans completely in both buffers merge into one run.
  size_t k = n - 1;
  uint64_t run_elems = static_cast<uint64_t>(region.shape[k]);
  while (k > 0 && region.shape[k] == src.shape[k] && region.shape[k] == dst.shape[k]) {
    --k;
    run_elems *= static_cast<uint64_t>(region.shape[k]);
  }
  std::vector<uint64_t> src_stride(n), dst_stride(n);
  uint64_t s = 1, t = 1;
  for (size_t d = n; d-- > 0;) {
    src_stride[d] = s;
    dst_stride[d] = t;
    s *= static_cast<uint64_t>(src.shape[d]);
    t *= static_cast<uint64_t>(dst.shape[d]);
  }
  // Odometer over dims [0, k) of the region; dim k starts at the region's offset.
  std::vector<int64_t> idx(k, 0);
  while (true) {
    uint64_t so = 0, dof = 0;
    for (size_t d = 0; d <= k; ++d) {
      const int64_t at = region.offsets[d] + (d < k ? idx[d] : 0);
      so += static_cast<uint64_t>(at - src.offsets[d]) * src_stride[d];
      dof += static_cast<uint64_t>(at - dst.offsets[d]) * dst_stride[d];
    }
    for (size_t d = k + 1; d < n; ++d) {
      so += static_cast<uint64_t>(region.offsets[d] - src.offsets[d]) * src_stride[d];
      dof += static_cast<uint64_t>(region.offsets[d] - dst.offsets[d]) * dst_stride[d];
    }
    run(so, dof, run_elems);
    size_t d = k;
    while (d > 0) {
      --d;
      if (++idx[d] < region.shape[d]) break;
      idx[d] = 0;
      if (d == 0) return;
    }
    if (k == 0) return;
  }
}

}  // namespace ckptio::dist::detail
