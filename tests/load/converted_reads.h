// The check every loader that converts while reading must pass: CheckpointReader::read_into_many
// into another dtype gives exactly (bit for bit) what converting a plain load afterwards gives.
#pragma once

#include <gtest/gtest.h>

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ckptio/load.h"

namespace ckptio::testing {

// `count` elements of `from` at `src`, converted to `to` (convert_elements) after the fact.
inline std::vector<std::byte> converted(DType from, std::span<const std::byte> src, DType to,
                                        uint64_t count) {
  std::vector<std::byte> out(static_cast<size_t>(count * dtype_bits(to) / 8));
  convert_elements(from, src.data(), to, out.data(), static_cast<size_t>(count));
  return out;
}

// Reads every (tensor name, dtype) of `wants` from `reader` in one read_into_many call, into
// destinations prefilled with garbage, and compares each with reader.tensor(name) converted.
inline void expect_converting_reads_match_plain_loads(
    const CheckpointReader& reader, const std::vector<std::pair<std::string, DType>>& wants,
    int threads = 0) {
  std::vector<std::vector<std::byte>> dsts;
  for (const auto& [name, to] : wants) {
    dsts.emplace_back(tensor_nbytes(to, reader.tensor(name).shape()), std::byte{0xAB});
  }
  std::vector<ReadRequest> requests;
  for (size_t i = 0; i < wants.size(); ++i) requests.push_back({wants[i].first, wants[i].second, dsts[i]});
  reader.read_into_many(requests, threads);
  for (size_t i = 0; i < wants.size(); ++i) {
    const auto& [name, to] = wants[i];
    const Tensor plain = reader.tensor(name);
    EXPECT_EQ(dsts[i], converted(plain.dtype(), plain.bytes(), to, shape_numel(plain.shape())))
        << name << " as " << dtype_name(to);
  }
}

}  // namespace ckptio::testing
