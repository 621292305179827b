// Internal: every tensor of a source, read in parallel, float tensors converted to `dtype` when
// set (the common step of load_checkpoint without targets and of convert). A finite value that the
// conversion would turn into Inf or NaN is Error(Mismatch) naming the tensor unless allow_overflow.
#pragma once

#include <optional>
#include <vector>

#include "ckptio/load.h"

namespace ckptio::detail {

struct ReadAllResult {
  std::vector<Tensor> tensors;  // in reader.tensors() order; zero-copy views where not converted
  std::vector<bool> converted;  // per tensor: was it converted to the requested dtype
};

ReadAllResult read_all_tensors(const CheckpointReader& reader, std::optional<DType> dtype,
                               int threads, bool allow_overflow = false);

}  // namespace ckptio::detail
