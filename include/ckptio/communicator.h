// The few collectives a distributed checkpoint needs, over whatever engine the job already runs
// (MPI, torch.distributed, or none). Every rank of the group makes the same calls in the same order.
//
// Failure contract: a collective either completes on every rank or throws on every rank that
// reaches it. A rank whose local work failed still takes part in the next agreement point
// (agree(), below), so that every rank throws an Error naming that rank and its error rather than
// wait for it. A rank that never arrives (killed, hung) is bounded by the
// communicator's timeout: the waiting ranks throw Error(Timeout) naming the collective and the
// ranks that did not arrive. After any throw the communicator is broken: later calls throw too.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ckptio::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;

  // This process's index in the group, 0 <= rank() < size().
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Every rank contributes `mine` (any length, may differ per rank); every rank receives all
  // contributions indexed by rank.
  virtual std::vector<std::string> all_gather(std::string_view mine) = 0;
  // Like all_gather, but only `root` receives the contributions; other ranks receive {}.
  virtual std::vector<std::string> gather(std::string_view mine, int root) = 0;
  // `root`'s `bytes` on every rank (other ranks' argument is ignored).
  virtual std::string broadcast(std::string_view bytes, int root) = 0;
  virtual void barrier() = 0;

  // How long a collective waits for the slowest rank before it throws Error(Timeout).
  virtual std::chrono::milliseconds timeout() const = 0;
};

// The agreement point of a multi-rank step: every rank passes its local outcome (nullptr for
// success). Returns normally on every rank if all succeeded; otherwise throws, on every rank, an
// Error with the first failing rank's code whose message names that rank and its message (and how
// many other ranks failed). `what` names the step in the message ("writing shards").
void agree(Communicator& comm, std::string_view what, const std::exception_ptr& local_error);

// One process, rank 0 of 1: every collective returns at once. The default communicator.
std::unique_ptr<Communicator> single_process_communicator();

// `size` communicators that talk through memory, one per rank, for ranks run as threads of one
// process (tests, single-node jobs without MPI). Rank r's communicator must be used by one thread
// at a time. Each collective waits at most `timeout` for the other ranks; then every waiting rank
// throws Error(Timeout) naming the collective and the ranks that did not arrive, and the group is
// broken (every later call on any rank throws). Throws Error(InvalidArgument) for size < 1.
std::vector<std::unique_ptr<Communicator>> make_thread_group(int size,
                                                             std::chrono::milliseconds timeout);

}  // namespace ckptio::dist
