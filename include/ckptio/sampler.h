// ResumableSampler: the order in which a training loop visits its dataset, deterministic and
// resumable from its state (the `sampler` component of a checkpoint). It needs no libtorch: it is
// part of the checkpoint library (ckptio_checkpoint).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckptio {

// A deterministic, resumable sampler over [0, dataset_size): a fresh permutation per epoch drawn
// from (seed, epoch) with a fully specified generator (mt19937_64 + rejection sampling, so the
// order is the same on every platform), handed out in batches; the remainder of an epoch that
// does not fill a batch is dropped. Its state is the `sampler` component:
//   {"seed", "epoch", "position", "dataset_size", "shuffle"}.
class ResumableSampler {
 public:
  // Throws Error(InvalidArgument) for an empty dataset.
  ResumableSampler(uint64_t dataset_size, uint64_t seed, bool shuffle = true);

  // The next `batch_size` indices; starts the next epoch when the current one cannot fill a
  // batch. Throws Error(InvalidArgument) when batch_size is 0 or larger than the dataset.
  std::vector<int64_t> next_batch(size_t batch_size);

  uint64_t epoch() const { return epoch_; }
  uint64_t position() const { return position_; }  // indices consumed in this epoch
  // Jumps to the start of `epoch`.
  void set_epoch(uint64_t epoch);

  // The state as JSON text (what TrainingState::sampler holds).
  std::string state() const;
  // Error(Mismatch) when the dataset size differs; Error(Corrupt) for malformed JSON, a malformed
  // state or a position past the end.
  void load_state(std::string_view state_json);

  // The permutation of one epoch (identity when not shuffling).
  std::vector<int64_t> epoch_order(uint64_t epoch) const;

 private:
  uint64_t dataset_size_;
  uint64_t seed_;
  bool shuffle_;
  uint64_t epoch_ = 0;
  uint64_t position_ = 0;
  std::vector<int64_t> order_;
};

namespace libtorch {
// Its former home, next to the libtorch adapters.
using ckptio::ResumableSampler;
}  // namespace libtorch

}  // namespace ckptio
