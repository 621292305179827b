// ResumableSampler: deterministic per-epoch permutations, resumable from its JSON state.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "ckptio/error.h"
#include "ckptio/sampler.h"

namespace {

using ckptio::ResumableSampler;

TEST(Sampler, EachEpochIsAPermutationThatChangesWithEpochAndSeed) {
  ResumableSampler s(100, 7);
  const auto e0 = s.epoch_order(0), e1 = s.epoch_order(1);
  auto sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, ResumableSampler(100, 8).epoch_order(0));
  EXPECT_EQ(e0, ResumableSampler(100, 7).epoch_order(0));
  ResumableSampler plain(5, 7, /*shuffle=*/false);
  EXPECT_EQ(plain.next_batch(5), (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(Sampler, BatchesWalkTheEpochAndDropTheRemainder) {
  ResumableSampler s(10, 1);
  const auto order = s.epoch_order(0);
  EXPECT_EQ(s.next_batch(4), std::vector<int64_t>(order.begin(), order.begin() + 4));
  EXPECT_EQ(s.next_batch(4), std::vector<int64_t>(order.begin() + 4, order.begin() + 8));
  EXPECT_EQ(s.position(), 8u);
  const auto next = s.next_batch(4);  // 2 left: a new epoch starts
  EXPECT_EQ(s.epoch(), 1u);
  const auto order1 = s.epoch_order(1);
  EXPECT_EQ(next, std::vector<int64_t>(order1.begin(), order1.begin() + 4));
}

TEST(Sampler, ResumesFromItsState) {
  ResumableSampler a(37, 99);
  for (int i = 0; i < 11; ++i) a.next_batch(5);
  const auto state = nlohmann::json::parse(a.state());
  EXPECT_EQ(state["epoch"], a.epoch());
  EXPECT_EQ(state["position"], a.position());
  ResumableSampler b(37, 1);  // the seed comes from the state
  b.load_state(state.dump());
  for (int i = 0; i < 20; ++i) ASSERT_EQ(a.next_batch(5), b.next_batch(5)) << i;
}

TEST(Sampler, OldLibtorchNameStillWorks) {
  ckptio::libtorch::ResumableSampler s(4, 3);
  EXPECT_EQ(s.next_batch(4).size(), 4u);
}

TEST(Sampler, RejectsBadStateAndArguments) {
  ResumableSampler s(10, 1);
  auto state = nlohmann::json::parse(s.state());
  ResumableSampler other(11, 1);
  EXPECT_THROW(other.load_state(state.dump()), ckptio::Error);
  state["position"] = 11;
  EXPECT_THROW(s.load_state(state.dump()), ckptio::Error);
  state.erase("seed");
  EXPECT_THROW(s.load_state(state.dump()), ckptio::Error);
  EXPECT_THROW(s.load_state("{\"seed\": "), ckptio::Error);  // not JSON at all
  EXPECT_THROW(s.next_batch(0), ckptio::Error);
  EXPECT_THROW(s.next_batch(11), ckptio::Error);
  EXPECT_THROW(ResumableSampler(0, 1), ckptio::Error);
}

}  // namespace
