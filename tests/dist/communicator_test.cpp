// The single-process communicator, the thread group's collectives and timeout, and agree().
#include <gtest/gtest.h>

#include <thread>

#include "ckptio/communicator.h"
#include "ckptio/error.h"
#include "dist_helpers.h"

namespace ckptio::dist {
namespace {

using namespace std::chrono_literals;
using testing::error_message;
using testing::run_ranks;

TEST(DistCommunicator, SingleProcessIsRankZeroOfOne) {
  auto c = single_process_communicator();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->all_gather("x"), std::vector<std::string>{"x"});
  EXPECT_EQ(c->broadcast("y", 0), "y");
  EXPECT_THROW(c->broadcast("y", 1), Error);
  EXPECT_NO_THROW(agree(*c, "step", nullptr));
  try {
    agree(*c, "step", std::make_exception_ptr(Error(ErrorCode::NoSpace, "disk full")));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NoSpace);
    EXPECT_NE(e.message().find("step: rank 0 of 1 failed: disk full"), std::string::npos) << e.what();
  }
}

TEST(DistCommunicator, ThreadGroupCollectives) {
  const auto errors = run_ranks(4, 60s, [](int rank, Communicator& c) {
    const auto all = c.all_gather(std::string(static_cast<size_t>(rank), 'a'));
    ASSERT_EQ(all.size(), 4u);
    for (int r = 0; r < 4; ++r) EXPECT_EQ(all[static_cast<size_t>(r)], std::string(static_cast<size_t>(r), 'a'));
    const auto g = c.gather("r" + std::to_string(rank), 2);
    if (rank == 2) {
      EXPECT_EQ(g, (std::vector<std::string>{"r0", "r1", "r2", "r3"}));
    } else {
      EXPECT_TRUE(g.empty());
    }
    EXPECT_EQ(c.broadcast(rank == 3 ? "from3" : "ignored", 3), "from3");
    c.barrier();
  });
  for (const auto& e : errors) EXPECT_EQ(error_message(e), "");
}

TEST(DistCommunicator, AgreeNamesTheFirstFailingRankOnEveryRank) {
  const auto errors = run_ranks(4, 60s, [](int rank, Communicator& c) {
    std::exception_ptr local;
    if (rank == 1) local = std::make_exception_ptr(Error(ErrorCode::Corrupt, "bad bytes"));
    if (rank == 3) local = std::make_exception_ptr(Error(ErrorCode::IoError, "EIO"));
    agree(c, "writing shards", local);
  });
  for (const auto& e : errors) {
    ASSERT_TRUE(e);
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), ErrorCode::Corrupt);
      EXPECT_EQ(err.message(), "writing shards: rank 1 of 4 failed: bad bytes (1 other rank failed too)");
    }
  }
}

TEST(DistCommunicator, ARankThatNeverCallsTimesOutTheOthersAndBreaksTheGroup) {
  auto comms = make_thread_group(3, 200ms);
  const auto errors = testing::run_first_ranks(comms, 2, [](int, Communicator& c) { c.barrier(); });
  for (const auto& e : errors) {
    ASSERT_TRUE(e);
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), ErrorCode::Timeout);
      EXPECT_NE(err.message().find("waiting for rank(s) 2 of 3"), std::string::npos) << err.what();
    }
  }
  // The late rank finds the group broken instead of waiting.
  EXPECT_THROW(comms[2]->barrier(), Error);
  EXPECT_EQ(error_code_name(ErrorCode::Timeout), "timeout");
}

TEST(DistCommunicator, MismatchedCollectivesBreakTheGroup) {
  const auto errors = run_ranks(2, 60s, [](int rank, Communicator& c) {
    if (rank == 0) {
      c.barrier();
    } else {
      c.broadcast("x", 1);
    }
  });
  // The rank that arrived second sees the mismatch; the first is woken by the broken group.
  for (const auto& e : errors) EXPECT_NE(error_message(e).find("every rank must make the same calls"), std::string::npos);
}

}  // namespace
}  // namespace ckptio::dist
