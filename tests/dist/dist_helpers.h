// Shared by the distributed checkpoint tests: deterministic global tensors, the layouts ranks
// hold them in, and running one function per rank on threads of a thread group.
#pragma once

#include <chrono>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ckptio/dist.h"
#include "ckptio/tensor.h"

namespace ckptio::dist::testing {

// The full tensor: deterministic bytes that differ per name and per position.
std::vector<std::byte> global_bytes(const std::string& name, DType dtype, const Shape& shape);

enum class Layout { Replicated, Rows, Grid, Flat, TwoRowBlocks };
std::string layout_name(Layout l);

// What rank `rank` of `world` holds of a tensor in layout `l` (several pieces for TwoRowBlocks;
// Grid falls back to Rows for tensors of rank < 2, Rows to Replicated for scalars).
std::vector<ShardedTensor> pieces_for(const std::string& name, DType dtype, const Shape& shape,
                                      Layout l, int rank, int world);

// The local bytes a piece holds, cut from the full tensor (flat padding zeroed).
std::vector<std::byte> local_bytes(const ShardedTensor& t, const std::vector<std::byte>& global);

// A tensor of the shared test state and the layout the saving ranks hold it in.
struct Spec {
  std::string name;
  DType dtype;
  Shape shape;
  Layout saved;
};
// Every layout kind at once, with uneven splits and ZeRO padding for 2 and 4 ranks.
const std::vector<Spec>& specs();

// Runs fn(rank, comm) on `world` threads of one thread group; returns each rank's exception.
std::vector<std::exception_ptr> run_ranks(int world, std::chrono::milliseconds timeout,
                                          const std::function<void(int, Communicator&)>& fn);
// Runs fn(rank, comm) for ranks 0..count-1 of `comms` only (the others never call: a rank that
// died or hangs), one thread each; returns their exceptions.
std::vector<std::exception_ptr> run_first_ranks(
    const std::vector<std::unique_ptr<Communicator>>& comms, int count,
    const std::function<void(int, Communicator&)>& fn);

// Saves the full tensors of `tensors` on `world` ranks, each rank its pieces of every tensor in
// the tensor's `saved` layout (fsync off, the rest from `options`); returns each rank's exception.
std::vector<std::exception_ptr> save_on_ranks(int world, const std::filesystem::path& dir,
                                              const std::vector<Spec>& tensors,
                                              const SaveOptions& options = {});

// The message of an exception_ptr holding a ckptio::Error ("" when none); other types fail.
std::string error_message(const std::exception_ptr& e);

}  // namespace ckptio::dist::testing
