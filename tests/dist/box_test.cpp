// The geometry under the distributed layouts: flat ranges as boxes, runs between boxes, and the
// replicated-tensor assignment.
#include <gtest/gtest.h>

#include <set>

#include "dist/box.h"
#include "dist/plan.h"

namespace ckptio::dist::detail {
namespace {

// Every flat index of a box of `shape`, row-major.
std::vector<uint64_t> flat_indices(const Box& b, const Shape& shape) {
  std::vector<uint64_t> out;
  const size_t n = shape.size();
  const uint64_t count = box_volume(b);
  std::vector<int64_t> idx(n, 0);
  for (uint64_t e = 0; e < count; ++e) {
    uint64_t g = 0;
    for (size_t d = 0; d < n; ++d) g = g * uint64_t(shape[d]) + uint64_t(b.offsets[d] + idx[d]);
    out.push_back(g);
    for (size_t d = n; d-- > 0;) {
      if (++idx[d] < b.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

TEST(DistBox, FlatRangesBecomeFewBoxesCoveringExactlyTheRange) {
  const Shape shape{3, 4, 5};
  for (uint64_t begin = 0; begin < 60; ++begin) {
    for (uint64_t end = begin + 1; end <= 60; ++end) {
      const auto boxes = flat_range_boxes(shape, begin, end);
      ASSERT_LE(boxes.size(), 2 * shape.size() - 1) << begin << ".." << end;
      uint64_t next = begin;
      for (const FlatBox& fb : boxes) {
        ASSERT_TRUE(box_inside(fb.box, shape));
        ASSERT_EQ(fb.flat_begin, next);
        // Each box is one contiguous run of the range, in order.
        for (uint64_t g : flat_indices(fb.box, shape)) ASSERT_EQ(g, next++) << begin << ".." << end;
      }
      ASSERT_EQ(next, end) << begin << ".." << end;
    }
  }
}

TEST(DistBox, ScalarAndEmptyRanges) {
  EXPECT_EQ(flat_range_boxes(Shape{}, 0, 1).size(), 1u);
  EXPECT_TRUE(flat_range_boxes(Shape{4}, 2, 2).empty());
}

TEST(DistBox, RunsCopyTheIntersectionBetweenTwoBoxes) {
  // Source box rows 1..4 x cols 0..6 of an 8x6 tensor, destination cols 2..5 x rows 0..8.
  const Shape shape{8, 6};
  const Box src{{1, 0}, {4, 6}}, dst{{0, 2}, {8, 3}};
  Box common;
  ASSERT_TRUE(intersect(src, dst, common));
  EXPECT_EQ(common.offsets, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(common.shape, (Shape{4, 3}));
  std::vector<uint64_t> src_flat = flat_indices(src, shape), dst_flat = flat_indices(dst, shape);
  std::set<uint64_t> copied;
  size_t runs = 0;
  for_each_run(src, dst, common, [&](uint64_t so, uint64_t dof, uint64_t n) {
    ++runs;
    for (uint64_t i = 0; i < n; ++i) {
      ASSERT_EQ(src_flat[so + i], dst_flat[dof + i]);
      copied.insert(src_flat[so + i]);
    }
  });
  EXPECT_EQ(runs, 4u);  // one per row: the columns are not whole in either box
  EXPECT_EQ(copied.size(), 12u);
  // Whole rows in both boxes merge into one run.
  runs = 0;
  const Box rows_a{{0, 0}, {5, 6}}, rows_b{{2, 0}, {6, 6}};
  ASSERT_TRUE(intersect(rows_a, rows_b, common));
  for_each_run(rows_a, rows_b, common, [&](uint64_t so, uint64_t dof, uint64_t n) {
    ++runs;
    EXPECT_EQ(so, 12u);
    EXPECT_EQ(dof, 0u);
    EXPECT_EQ(n, 18u);
  });
  EXPECT_EQ(runs, 1u);
}

TEST(DistBox, ReplicatedTensorsGoLargestFirstToTheLeastLoadedRank) {
  std::vector<std::pair<std::string, uint64_t>> a{{"small", 10}, {"big", 100}, {"mid", 50}, {"mid2", 50}};
  auto b = a;
  std::reverse(b.begin(), b.end());
  const auto owners_a = assign_replicated(a, 2);
  const auto owners_b = assign_replicated(b, 2);
  EXPECT_EQ(a, b);  // sorted the same whatever the input order
  EXPECT_EQ(owners_a, owners_b);
  // big -> 0, mid -> 1, mid2 -> 1 (50 < 100), small -> 0 (100 < 110)
  EXPECT_EQ(owners_a, (std::vector<int>{0, 1, 1, 0}));
}

}  // namespace
}  // namespace ckptio::dist::detail
