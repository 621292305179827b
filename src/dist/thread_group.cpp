// make_thread_group: ranks as threads of one process, meeting in shared memory.
//
// Each collective is a round: the n-th call of every rank is round n. A rank drops its
// contribution into the round, waits (bounded by the timeout) until every rank has, takes a copy
// of all of them, and the last rank to leave frees the round. Every collective is an all-gather
// underneath; these groups serve tests and single-node jobs, where the copies do not matter.
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "ckptio/communicator.h"
#include "ckptio/error.h"

namespace ckptio::dist {

namespace {

struct Round {
  std::string op;  // the collective the first rank to arrive called
  std::vector<std::optional<std::string>> contributions;
  int arrived = 0;
  int left = 0;
};

struct Group {
  explicit Group(int n, std::chrono::milliseconds t) : size(n), timeout(t) {}
  const int size;
  const std::chrono::milliseconds timeout;
  std::mutex mutex;
  std::condition_variable cv;
  std::map<uint64_t, Round> rounds;
  // Set once: the error every later call throws.
  std::optional<Error> broken;
};

class ThreadRank final : public Communicator {
 public:
  ThreadRank(std::shared_ptr<Group> group, int rank) : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size; }
  std::chrono::milliseconds timeout() const override { return group_->timeout; }

  std::vector<std::string> all_gather(std::string_view mine) override {
    return exchange("all_gather", mine);
  }
  std::vector<std::string> gather(std::string_view mine, int root) override {
    check_root(root);
    std::vector<std::string> all = exchange("gather", mine);
    if (rank_ != root) return {};
    return all;
  }
  std::string broadcast(std::string_view bytes, int root) override {
    check_root(root);
    std::vector<std::string> all = exchange("broadcast", rank_ == root ? bytes : std::string_view{});
    return std::move(all[static_cast<size_t>(root)]);
  }
  void barrier() override { exchange("barrier", {}); }

 private:
  void check_root(int root) const {
    if (root < 0 || root >= group_->size) {
      throw Error(ErrorCode::InvalidArgument, "root rank " + std::to_string(root) +
                                                  " is outside a group of " +
                                                  std::to_string(group_->size));
    }
  }

  std::vector<std::string> exchange(const char* op, std::string_view mine) {
    Group& g = *group_;
    std::unique_lock lock(g.mutex);
    if (g.broken) throw *g.broken;
    const uint64_t id = next_round_++;
    Round& round = g.rounds[id];
    if (round.contributions.empty()) {
      round.op = op;
      round.contributions.resize(static_cast<size_t>(g.size));
    } else if (round.op != op) {
      g.broken = Error(ErrorCode::Internal,
                       "collective #" + std::to_string(id) + ": rank " + std::to_string(rank_) +
                           " called " + op + " while another rank called " + round.op +
                           " (every rank must make the same calls in the same order)");
      g.cv.notify_all();
      throw *g.broken;
    }
    round.contributions[static_cast<size_t>(rank_)] = std::string(mine);
    ++round.arrived;
    if (round.arrived == g.size) g.cv.notify_all();
    // A "forever" timeout must not overflow the clock.
    const auto bound = std::min<std::chrono::milliseconds>(g.timeout, std::chrono::hours(24 * 365));
    const auto deadline = std::chrono::steady_clock::now() + bound;
    const bool done = g.cv.wait_until(lock, deadline, [&] {
      return g.broken.has_value() || round.arrived == g.size;
    });
    if (round.arrived < g.size) {
      if (!done && !g.broken) {
        std::string missing;
        for (int r = 0; r < g.size; ++r) {
          if (round.contributions[static_cast<size_t>(r)]) continue;
          missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        }
        g.broken = Error(ErrorCode::Timeout,
                         std::string(op) + " (collective #" + std::to_string(id) +
                             ") timed out after " + std::to_string(g.timeout.count()) +
                             " ms waiting for rank(s) " + missing + " of " +
                             std::to_string(g.size));
        g.cv.notify_all();
      }
      throw *g.broken;
    }
    std::vector<std::string> out;
    out.reserve(round.contributions.size());
    for (const auto& c : round.contributions) out.push_back(*c);
    if (++round.left == g.size) g.rounds.erase(id);
    return out;
  }

  std::shared_ptr<Group> group_;
  int rank_;
  uint64_t next_round_ = 0;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_thread_group(int size,
                                                             std::chrono::milliseconds timeout) {
  if (size < 1) {
    throw Error(ErrorCode::InvalidArgument,
                "a thread group needs at least 1 rank, got " + std::to_string(size));
  }
  auto group = std::make_shared<Group>(size, timeout);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < size; ++r) out.push_back(std::make_unique<ThreadRank>(group, r));
  return out;
}

}  // namespace ckptio::dist
