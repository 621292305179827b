// The MPI Communicator (mpi_communicator.h): variable-length collectives built from a size phase
// and a data phase, every MPI request polled with MPI_Test against one deadline per collective.
#include "ckptio/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "ckptio/error.h"

namespace ckptio::dist {

namespace {

using Clock = std::chrono::steady_clock;

// The gather's size messages: one tag is enough, because every rank makes the same calls in the
// same order and MPI keeps point-to-point messages between two ranks on one tag in order.
constexpr int kSizeTag = 7301;
// Collectives do not say which ranks contributed.
const std::string kUnknown = "; MPI cannot tell which ranks did not arrive";

std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(text, static_cast<size_t>(len));
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i == 8) {
      out += " and " + std::to_string(ranks.size() - 8) + " more";
      break;
    }
    if (i > 0) out += ", ";
    out += std::to_string(ranks[i]);
  }
  return out;
}

// What a collective leaves behind when it times out: MPI may still write into its buffers if a late
// rank arrives, and requests of non-blocking collectives can be neither cancelled nor freed. They
// are parked here for the life of the process (a timeout breaks the communicator, so this happens
// at most once per communicator).
struct Abandoned {
  std::vector<MPI_Request> requests;
  std::vector<std::vector<char>> buffers;
  std::vector<std::vector<int>> int_buffers;
  std::vector<std::vector<uint64_t>> u64_buffers;
};
void park(Abandoned a) {
  static std::mutex mu;
  static auto* graveyard = new std::vector<Abandoned>();  // never freed on purpose
  std::lock_guard lock(mu);
  graveyard->push_back(std::move(a));
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::chrono::milliseconds timeout) : timeout_(timeout) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized) {
      throw Error(ErrorCode::InvalidArgument, "mpi_communicator: MPI is not initialised (call MPI_Init_thread first)");
    }
    if (timeout.count() <= 0) {
      throw Error(ErrorCode::InvalidArgument, "mpi_communicator: the timeout must be positive");
    }
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    // Errors come back as return codes and become ckptio::Error, instead of aborting the job.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // A broken communicator may still have requests in flight on comm_: leave it to MPI_Finalize.
    if (!finalized && broken_.empty()) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::chrono::milliseconds timeout() const override { return timeout_; }

  std::vector<std::string> all_gather(std::string_view mine) override {
    Op op(*this, "all_gather");
    // Every buffer MPI holds is on the heap: after a timeout it is parked, not freed (see park()).
    std::vector<uint64_t> my_size{mine.size()};
    std::vector<uint64_t> sizes(static_cast<size_t>(size_));
    MPI_Request req;
    op.check(MPI_Iallgather(my_size.data(), 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, comm_, &req),
             "MPI_Iallgather");
    op.wait(req, "exchanging sizes" + kUnknown, [&](Abandoned& a) {
      a.u64_buffers.push_back(std::move(sizes));
      a.u64_buffers.push_back(std::move(my_size));
    });

    std::vector<int> counts, displs;
    const uint64_t total = layout(sizes, counts, displs, op);
    std::vector<char> buf(total);
    std::vector<char> send(mine.begin(), mine.end());  // MPI-2 era headers want non-const
    op.check(MPI_Iallgatherv(send.data(), static_cast<int>(send.size()), MPI_CHAR, buf.data(),
                             counts.data(), displs.data(), MPI_CHAR, comm_, &req),
             "MPI_Iallgatherv");
    op.wait(req, "exchanging bytes" + kUnknown, [&](Abandoned& a) {
      a.buffers.push_back(std::move(buf));
      a.buffers.push_back(std::move(send));
      a.int_buffers.push_back(std::move(counts));
      a.int_buffers.push_back(std::move(displs));
    });
    return split(buf, sizes, displs);
  }

  std::vector<std::string> gather(std::string_view mine, int root) override {
    Op op(*this, "gather");
    check_root(root);
    std::vector<uint64_t> my_size{mine.size()};
    std::vector<uint64_t> sizes(static_cast<size_t>(size_));
    // Sizes travel point to point so that the root knows exactly which ranks did not arrive.
    if (rank_ == root) {
      sizes[static_cast<size_t>(rank_)] = my_size[0];
      std::vector<MPI_Request> reqs;
      std::vector<int> from;
      for (int r = 0; r < size_; ++r) {
        if (r == root) continue;
        reqs.emplace_back();
        from.push_back(r);
        op.check(MPI_Irecv(&sizes[static_cast<size_t>(r)], 1, MPI_UINT64_T, r, kSizeTag, comm_, &reqs.back()),
                 "MPI_Irecv");
      }
      op.wait_all(reqs, from, [&](Abandoned& a) { a.u64_buffers.push_back(std::move(sizes)); });
    } else {
      MPI_Request req;
      op.check(MPI_Isend(my_size.data(), 1, MPI_UINT64_T, root, kSizeTag, comm_, &req), "MPI_Isend");
      op.wait(req, "sending its size to root " + std::to_string(root), [&](Abandoned& a) {
        a.u64_buffers.push_back(std::move(my_size));
      });
    }
    std::vector<int> counts, displs;
    uint64_t total = 0;
    if (rank_ == root) {
      total = layout(sizes, counts, displs, op);
    } else if (mine.size() > static_cast<uint64_t>(INT_MAX)) {
      op.fail(ErrorCode::Unsupported, std::to_string(mine.size()) + " bytes (at most " + std::to_string(INT_MAX) + ")");
    }
    std::vector<char> buf(total);
    std::vector<char> send(mine.begin(), mine.end());
    MPI_Request req;
    op.check(MPI_Igatherv(send.data(), static_cast<int>(send.size()), MPI_CHAR, buf.data(),
                          counts.data(), displs.data(), MPI_CHAR, root, comm_, &req),
             "MPI_Igatherv");
    op.wait(req, "exchanging bytes" + kUnknown, [&](Abandoned& a) {
      a.buffers.push_back(std::move(buf));
      a.buffers.push_back(std::move(send));
      a.int_buffers.push_back(std::move(counts));
      a.int_buffers.push_back(std::move(displs));
    });
    if (rank_ != root) return {};
    return split(buf, sizes, displs);
  }

  std::string broadcast(std::string_view bytes, int root) override {
    Op op(*this, "broadcast");
    check_root(root);
    std::vector<uint64_t> size_buf{rank_ == root ? bytes.size() : 0};
    MPI_Request req;
    op.check(MPI_Ibcast(size_buf.data(), 1, MPI_UINT64_T, root, comm_, &req), "MPI_Ibcast");
    const std::string waiting = "waiting for root " + std::to_string(root) + " (or a rank relaying its bytes)";
    op.wait(req, waiting, [&](Abandoned& a) { a.u64_buffers.push_back(std::move(size_buf)); });
    const uint64_t n = size_buf[0];
    if (n > static_cast<uint64_t>(INT_MAX)) {
      op.fail(ErrorCode::Unsupported, std::to_string(n) + " bytes (at most " + std::to_string(INT_MAX) + ")");
    }
    std::vector<char> buf(n);
    if (rank_ == root) std::copy(bytes.begin(), bytes.end(), buf.begin());
    op.check(MPI_Ibcast(buf.data(), static_cast<int>(n), MPI_CHAR, root, comm_, &req), "MPI_Ibcast");
    op.wait(req, waiting, [&](Abandoned& a) { a.buffers.push_back(std::move(buf)); });
    return std::string(buf.begin(), buf.end());
  }

  void barrier() override {
    Op op(*this, "barrier");
    MPI_Request req;
    op.check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    op.wait(req, "waiting for every rank" + kUnknown, [](Abandoned&) {});
  }

 private:
  // One collective: its name, its deadline, and the breaking of the communicator on failure.
  class Op {
   public:
    Op(MpiCommunicator& c, const char* name)
        : c_(c), name_(name), deadline_(Clock::now() + c.timeout_) {
      if (!c_.broken_.empty()) {
        throw Error(c_.broken_code_, std::string(name_) + ": the MPI communicator is broken since an earlier failure (" +
                                         c_.broken_ + ")");
      }
    }

    [[noreturn]] void fail(ErrorCode code, const std::string& what) {
      std::string msg = "MPI " + std::string(name_) + " on rank " + std::to_string(c_.rank_) + " of " +
                        std::to_string(c_.size_) + ": " + what;
      c_.broken_ = msg;
      c_.broken_code_ = code;
      throw Error(code, std::move(msg));
    }
    void check(int rc, const char* call) {
      if (rc != MPI_SUCCESS) fail(ErrorCode::IoError, std::string(call) + " failed: " + mpi_error_text(rc));
    }

    // Polls one request until it completes or the deadline passes; on timeout `keep` parks what the
    // request may still touch.
    template <class Keep>
    void wait(MPI_Request& req, const std::string& phase, Keep keep) {
      Backoff backoff;
      while (true) {
        int done = 0;
        check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
        if (done) return;
        if (Clock::now() >= deadline_) {
          Abandoned a;
          a.requests.push_back(req);
          keep(a);
          park(std::move(a));
          fail(ErrorCode::Timeout, "timed out after " + std::to_string(c_.timeout_.count()) + " ms " + phase);
        }
        backoff.pause();
      }
    }

    // Polls point-to-point receives, one per rank in `from`; on timeout names the ranks missing.
    template <class Keep>
    void wait_all(std::vector<MPI_Request>& reqs, const std::vector<int>& from, Keep keep) {
      Backoff backoff;
      std::vector<bool> done(reqs.size(), false);
      size_t left = reqs.size();
      while (left > 0) {
        for (size_t i = 0; i < reqs.size(); ++i) {
          if (done[i]) continue;
          int flag = 0;
          check(MPI_Test(&reqs[i], &flag, MPI_STATUS_IGNORE), "MPI_Test");
          if (flag) {
            done[i] = true;
            --left;
          }
        }
        if (left == 0) return;
        if (Clock::now() >= deadline_) {
          std::vector<int> missing;
          Abandoned a;
          for (size_t i = 0; i < reqs.size(); ++i) {
            if (done[i]) continue;
            missing.push_back(from[i]);
            // A receive that never matched can be cancelled, unlike a collective.
            MPI_Cancel(&reqs[i]);
            a.requests.push_back(reqs[i]);
          }
          keep(a);
          park(std::move(a));
          fail(ErrorCode::Timeout, "timed out after " + std::to_string(c_.timeout_.count()) +
                                       " ms; ranks that did not arrive: " + rank_list(missing));
        }
        backoff.pause();
      }
    }

   private:
    // Polling on a loaded machine must not take a core from the rank that is still computing.
    struct Backoff {
      std::chrono::microseconds d{1};
      void pause() {
        std::this_thread::sleep_for(d);
        d = std::min(d * 2, std::chrono::microseconds(1000));
      }
    };

    MpiCommunicator& c_;
    const char* name_;
    Clock::time_point deadline_;
  };

  void check(int rc, const char* call) {
    if (rc != MPI_SUCCESS) throw Error(ErrorCode::IoError, std::string(call) + " failed: " + mpi_error_text(rc));
  }
  void check_root(int root) const {
    if (root < 0 || root >= size_) {
      // Every rank passes the same root, so every rank throws here: the communicator stays usable.
      throw Error(ErrorCode::InvalidArgument, "MPI collective: root " + std::to_string(root) +
                                                  " outside 0.." + std::to_string(size_ - 1));
    }
  }
  // MPI counts and displacements are ints: the contributions of one collective must fit 2 GiB.
  uint64_t layout(const std::vector<uint64_t>& sizes, std::vector<int>& counts, std::vector<int>& displs, Op& op) const {
    uint64_t total = 0;
    counts.resize(sizes.size());
    displs.resize(sizes.size());
    for (size_t r = 0; r < sizes.size(); ++r) {
      if (sizes[r] > static_cast<uint64_t>(INT_MAX) || total + sizes[r] > static_cast<uint64_t>(INT_MAX)) {
        op.fail(ErrorCode::Unsupported, "contributions total more than " + std::to_string(INT_MAX) +
                                            " bytes (rank " + std::to_string(r) + " gives " +
                                            std::to_string(sizes[r]) + ")");
      }
      counts[r] = static_cast<int>(sizes[r]);
      displs[r] = static_cast<int>(total);
      total += sizes[r];
    }
    return total;
  }
  static std::vector<std::string> split(const std::vector<char>& buf, const std::vector<uint64_t>& sizes,
                                        const std::vector<int>& displs) {
    std::vector<std::string> out(sizes.size());
    for (size_t r = 0; r < sizes.size(); ++r) {
      out[r].assign(buf.data() + displs[r], static_cast<size_t>(sizes[r]));
    }
    return out;
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_;
  std::string broken_;  // non-empty once a collective failed
  ErrorCode broken_code_ = ErrorCode::Timeout;
};

}  // namespace

std::unique_ptr<Communicator> mpi_communicator(MPI_Comm comm, std::chrono::milliseconds timeout) {
  return std::make_unique<MpiCommunicator>(comm, timeout);
}

}  // namespace ckptio::dist
