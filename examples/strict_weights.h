// Inference-side loading for the demo: fills a model's own tensors from any checkpoint ckptio
// reads, strictly, through load_checkpoint. A translation unit of its own so that the one demo file
// that includes libtorch does not also compile load.h.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "ckptio/tensor.h"

namespace demo {

// `targets` are writable views of the model's tensors (libtorch::module_targets). Loads the EMA
// weights of a training checkpoint folder (or any other source load_checkpoint resolves) into
// them. Throws ckptio::Error(Mismatch) listing every difference. Returns load_checkpoint's summary.
std::string load_weights_strict(const std::filesystem::path& source,
                                std::map<std::string, ckptio::Tensor>& targets);

}  // namespace demo
