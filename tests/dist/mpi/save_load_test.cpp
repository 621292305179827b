// Run by ctest under Open MPI: `mpirun -np N dist_mpi_save_load_test save DIR` saves the shared
// test state (every layout kind: tests/dist/dist_helpers.h) from N processes through the MPI
// communicator; `mpirun -np M dist_mpi_save_load_test load DIR` has every rank load it back in
// every layout and compare it bit for bit with the full tensors. Any failure prints the rank and
// makes every process exit non-zero.
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "ckptio/dist.h"
#include "ckptio/mpi_communicator.h"
#include "mpi_test_main.h"
#include "dist_helpers.h"

namespace {

namespace dist = ckptio::dist;
using dist::testing::Layout;

void save_state(int rank, int world, const std::filesystem::path& dir) {
  std::vector<std::vector<std::byte>> buffers;
  std::vector<dist::SaveItem> items;
  for (const dist::testing::Spec& s : dist::testing::specs()) {
    const auto global = dist::testing::global_bytes(s.name, s.dtype, s.shape);
    for (dist::ShardedTensor& t : dist::testing::pieces_for(s.name, s.dtype, s.shape, s.saved, rank, world)) {
      buffers.push_back(dist::testing::local_bytes(t, global));
      items.push_back({std::move(t), {}});
    }
  }
  for (size_t i = 0; i < items.size(); ++i) items[i].bytes = buffers[i];
  const auto comm = dist::mpi_communicator(MPI_COMM_WORLD, std::chrono::seconds(120));
  dist::SaveOptions options;
  options.replace = true;  // ctest may run the save again over an earlier run's checkpoint
  dist::save(*comm, dir, items, options);
}

// Returns the number of tensors that did not load equal to the full tensor's part.
int load_and_compare(int rank, int world, const std::filesystem::path& dir) {
  int mismatches = 0;
  for (Layout l : {Layout::Replicated, Layout::Rows, Layout::Grid, Layout::Flat, Layout::TwoRowBlocks}) {
    std::vector<std::vector<std::byte>> buffers;
    std::vector<std::vector<std::byte>> expected;
    std::vector<dist::LoadItem> items;
    for (const dist::testing::Spec& s : dist::testing::specs()) {
      const auto global = dist::testing::global_bytes(s.name, s.dtype, s.shape);
      for (dist::ShardedTensor& t : dist::testing::pieces_for(s.name, s.dtype, s.shape, l, rank, world)) {
        expected.push_back(dist::testing::local_bytes(t, global));
        buffers.emplace_back(t.local_nbytes(), std::byte{0x5a});
        items.push_back({std::move(t), {}});
      }
    }
    for (size_t i = 0; i < items.size(); ++i) items[i].bytes = buffers[i];
    (void)dist::load(dir, items);
    for (size_t i = 0; i < items.size(); ++i) {
      if (buffers[i] != expected[i]) {
        std::fprintf(stderr, "rank %d of %d: '%s' loaded as %s differs\n", rank, world,
                     items[i].tensor.name.c_str(), dist::testing::layout_name(l).c_str());
        ++mismatches;
      }
    }
  }
  return mismatches;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc == 3 ? argv[1] : "";
  return ckptio::dist::testing::run_mpi_test(
      argc, argv, "dist_mpi_save_load_test " + mode, [&](int rank, int world) {
        if (mode == "save") {
          save_state(rank, world, argv[2]);
          return 0;
        }
        if (mode == "load") return load_and_compare(rank, world, argv[2]);
        std::fprintf(stderr, "usage: dist_mpi_save_load_test save|load DIR\n");
        return 1;
      });
}
