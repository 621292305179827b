// Run by ctest under `mpirun -np K` (K = 1, 2, 4): every rank runs the same scenarios in the same
// order; any failed check prints the rank and line and makes the process exit non-zero, which
// makes mpirun (and the test) fail. Not GoogleTest: each scenario needs every rank, so the cases
// cannot be discovered and run one process at a time.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/mpi_communicator.h"
#include "mpi_test_main.h"

namespace {

using ckptio::Error;
using ckptio::ErrorCode;
using ckptio::dist::Communicator;
using ckptio::dist::mpi_communicator;

int g_rank = 0;
int g_failures = 0;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "rank %d: %s:%d: CHECK(%s) failed\n", g_rank, __FILE__, __LINE__, #cond); \
      ++g_failures;                                                                  \
    }                                                                                \
  } while (0)

// Runs `f`, which must throw ckptio::Error with `code`; returns its message ("" if it did not).
template <class F>
std::string expect_error(ErrorCode code, F f, int line) {
  try {
    f();
  } catch (const Error& e) {
    if (e.code() != code) {
      std::fprintf(stderr, "rank %d: line %d: expected %s, got %s\n", g_rank, line,
                   std::string(ckptio::error_code_name(code)).c_str(), e.what());
      ++g_failures;
    }
    return e.message();
  }
  std::fprintf(stderr, "rank %d: line %d: expected %s, nothing was thrown\n", g_rank, line,
               std::string(ckptio::error_code_name(code)).c_str());
  ++g_failures;
  return "";
}

// Bytes that differ by rank, round and position, so a misplaced or truncated block shows.
std::string pattern(int rank, int round, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + static_cast<size_t>(rank) * 7 + round) & 0xff);
  return s;
}
// Unequal sizes: empty, small, several MiB.
size_t contribution_size(int rank, int round) {
  switch ((rank + round) % 4) {
    case 0: return (size_t{3} << 20) + 17;
    case 1: return 0;
    case 2: return 5;
    default: return (size_t{1} << 20) + static_cast<size_t>(rank);
  }
}

const auto kLong = std::chrono::milliseconds(120'000);  // never reached unless something is wrong
const auto kShort = std::chrono::milliseconds(2'000);

void collectives_give_every_contribution(int size) {
  auto comm = mpi_communicator(MPI_COMM_WORLD, kLong);
  CHECK(comm->rank() == g_rank);
  CHECK(comm->size() == size);
  for (int round = 0; round < 4; ++round) {
    const std::string mine = pattern(g_rank, round, contribution_size(g_rank, round));
    const auto all = comm->all_gather(mine);
    CHECK(static_cast<int>(all.size()) == size);
    for (int r = 0; r < size && r < static_cast<int>(all.size()); ++r) {
      CHECK(all[r] == pattern(r, round, contribution_size(r, round)));
    }
    const int root = round % size;
    const auto got = comm->gather(mine, root);
    if (g_rank == root) {
      CHECK(static_cast<int>(got.size()) == size);
      for (int r = 0; r < size && r < static_cast<int>(got.size()); ++r) {
        CHECK(got[r] == pattern(r, round, contribution_size(r, round)));
      }
    } else {
      CHECK(got.empty());
    }
    const std::string sent = pattern(root, round, contribution_size(root, round));
    const std::string b = comm->broadcast(g_rank == root ? sent : std::string("ignored"), root);
    CHECK(b == sent);
    comm->barrier();
  }
  // Every rank empty.
  const auto empty = comm->all_gather("");
  CHECK(static_cast<int>(empty.size()) == size);
  for (const auto& e : empty) CHECK(e.empty());
  CHECK(comm->broadcast("", 0).empty());
  // A root outside the group is the caller's mistake on every rank: the communicator stays usable.
  expect_error(ErrorCode::InvalidArgument, [&] { comm->broadcast("x", size); }, __LINE__);
  CHECK(comm->broadcast("still works", 0) == "still works");
}

// One rank skips a collective: the others throw Timeout naming it, and stay broken. The skipping
// rank waits at a world barrier instead, which the others reach only after they gave up: no sleep.
void a_rank_that_never_arrives_times_out_the_others(int size) {
  if (size < 2) return;
  const int skipper = size - 1;
  struct Case {
    const char* name;
    void (*call)(Communicator&);
    bool every_rank_throws;  // a gather's non-root ranks may finish: their bytes were sent
  };
  const Case cases[] = {
      {"barrier", [](Communicator& c) { c.barrier(); }, true},
      {"all_gather", [](Communicator& c) { c.all_gather(std::string(1000, 'a')); }, true},
      {"broadcast", [](Communicator& c) { c.broadcast("x", c.size() - 1); }, true},
      {"gather", [](Communicator& c) { c.gather("abc", 0); }, false},
  };
  for (const Case& k : cases) {
    auto comm = mpi_communicator(MPI_COMM_WORLD, kShort);
    if (g_rank != skipper) {
      bool threw = false;
      try {
        k.call(*comm);
      } catch (const Error& e) {
        threw = true;
        CHECK(e.code() == ErrorCode::Timeout);
        CHECK(e.message().find(k.name) != std::string::npos);
        if (std::string(k.name) == "gather" && g_rank == 0) {
          // The root hears every size point to point, so it knows who is missing (on a loaded
          // machine a slow rank may be listed too; the skipper always is).
          const std::string& m = e.message();
          const size_t at = m.find("did not arrive: ");
          CHECK(at != std::string::npos);
          if (at != std::string::npos) {
            const std::string list = ", " + m.substr(at + 16) + ",";
            CHECK(list.find(", " + std::to_string(skipper) + ",") != std::string::npos);
          }
        }
      }
      CHECK(threw || !k.every_rank_throws);
      if (threw) {
        // Broken: later calls throw at once, whatever they are.
        const std::string m = expect_error(ErrorCode::Timeout, [&] { comm->all_gather("later"); }, __LINE__);
        CHECK(m.find("broken") != std::string::npos);
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

// The agreement point (communicator.h's agree) as the status exchange it is: every rank's outcome
// through all_gather, then every rank throws the first failure. This checks that a local failure
// on one rank reaches every rank through the MPI communicator.
void agree_through_all_gather(Communicator& comm, const std::exception_ptr& local) {
  std::string mine;
  if (local) {
    try {
      std::rethrow_exception(local);
    } catch (const Error& e) {
      mine = std::string(1, static_cast<char>(e.code())) + e.message();
    }
  }
  const auto all = comm.all_gather(mine);
  for (size_t r = 0; r < all.size(); ++r) {
    if (!all[r].empty()) {
      throw Error(static_cast<ErrorCode>(all[r][0]),
                  "writing shards: rank " + std::to_string(r) + " failed: " + all[r].substr(1));
    }
  }
}

void a_local_failure_reaches_every_rank(int size) {
  auto comm = mpi_communicator(MPI_COMM_WORLD, kLong);
  const int failing = size / 2;
  std::exception_ptr local;
  if (g_rank == failing) local = std::make_exception_ptr(Error(ErrorCode::NoSpace, "shard-3: disk full"));
  const std::string m = expect_error(ErrorCode::NoSpace, [&] { agree_through_all_gather(*comm, local); }, __LINE__);
  CHECK(m.find("rank " + std::to_string(failing)) != std::string::npos);
  CHECK(m.find("disk full") != std::string::npos);
  // Nobody failed: everyone goes on.
  agree_through_all_gather(*comm, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  return ckptio::dist::testing::run_mpi_test(argc, argv, "mpi_communicator_test",
                                             [](int rank, int size) {
                                               g_rank = rank;
                                               collectives_give_every_contribution(size);
                                               a_local_failure_reaches_every_rank(size);
                                               a_rank_that_never_arrives_times_out_the_others(size);
                                               return g_failures;
                                             });
}
