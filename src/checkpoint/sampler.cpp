// ResumableSampler: per-epoch permutations from a fully specified generator.
#include <nlohmann/json.hpp>

#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "ckptio/error.h"
#include "ckptio/sampler.h"

namespace ckptio {

namespace {

// Uniform in [0, bound) by rejection: std::uniform_int_distribution is implementation-defined,
// this is not, so a checkpoint resumes with the same order on every standard library.
uint64_t uniform_below(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                         (std::numeric_limits<uint64_t>::max() % bound);
  uint64_t x = gen();
  while (x >= limit) x = gen();
  return x % bound;
}

}  // namespace

ResumableSampler::ResumableSampler(uint64_t dataset_size, uint64_t seed, bool shuffle)
    : dataset_size_(dataset_size), seed_(seed), shuffle_(shuffle) {
  if (dataset_size == 0) {
    throw Error(ErrorCode::InvalidArgument, "ResumableSampler: the dataset is empty");
  }
  order_ = epoch_order(0);
}

std::vector<int64_t> ResumableSampler::epoch_order(uint64_t epoch) const {
  std::vector<int64_t> order(dataset_size_);
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle_) return order;
  // Distinct, well-mixed seeds per (seed, epoch).
  std::seed_seq seq{static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32),
                    static_cast<uint32_t>(epoch), static_cast<uint32_t>(epoch >> 32)};
  std::mt19937_64 gen(seq);
  for (uint64_t i = dataset_size_ - 1; i > 0; --i) {
    std::swap(order[i], order[uniform_below(gen, i + 1)]);
  }
  return order;
}

std::vector<int64_t> ResumableSampler::next_batch(size_t batch_size) {
  if (batch_size == 0 || batch_size > dataset_size_) {
    throw Error(ErrorCode::InvalidArgument,
                "ResumableSampler: batch size " + std::to_string(batch_size) +
                    " for a dataset of " + std::to_string(dataset_size_));
  }
  if (position_ + batch_size > dataset_size_) set_epoch(epoch_ + 1);
  std::vector<int64_t> batch(order_.begin() + static_cast<std::ptrdiff_t>(position_),
                             order_.begin() + static_cast<std::ptrdiff_t>(position_ + batch_size));
  position_ += batch_size;
  return batch;
}

void ResumableSampler::set_epoch(uint64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
  order_ = epoch_order(epoch);
}

std::string ResumableSampler::state() const {
  return nlohmann::json{{"seed", seed_},
                        {"epoch", epoch_},
                        {"position", position_},
                        {"dataset_size", dataset_size_},
                        {"shuffle", shuffle_}}
      .dump();
}

void ResumableSampler::load_state(std::string_view state_json) {
  uint64_t seed = 0, epoch = 0, position = 0, size = 0;
  bool shuffle = true;
  try {
    const nlohmann::json state = nlohmann::json::parse(state_json);
    seed = state.at("seed").get<uint64_t>();
    epoch = state.at("epoch").get<uint64_t>();
    position = state.at("position").get<uint64_t>();
    size = state.at("dataset_size").get<uint64_t>();
    shuffle = state.at("shuffle").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Corrupt, std::string("sampler state JSON: ") + e.what());
  }
  if (size != dataset_size_) {
    throw Error(ErrorCode::Mismatch,
                "sampler state is for a dataset of " + std::to_string(size) +
                    ", this one has " + std::to_string(dataset_size_));
  }
  if (position > size) {
    throw Error(ErrorCode::Corrupt,
                "sampler state: position " + std::to_string(position) +
                    " past the dataset size " + std::to_string(size));
  }
  seed_ = seed;
  shuffle_ = shuffle;
  set_epoch(epoch);
  position_ = position;
}

}  // namespace ckptio
