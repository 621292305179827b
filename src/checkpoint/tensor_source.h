// A component's tensors as the loader sees them, whatever file they come from (one safetensors
// file, a sharded folder of any index flavour, a torch pickle): names, dtypes, shapes, and a way
// to read each one, so that filling caller buffers and strict key checks are written once.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ckptio/checkpoint_io.h"
#include "ckptio/io.h"
#include "ckptio/tensor.h"

namespace ckptio::checkpoint {

struct SourceTensor {
  DType dtype = DType::F32;
  Shape shape;
  std::function<void(std::span<std::byte>)> read_into;  // dst holds exactly the stored bytes
  std::function<Tensor()> read_owned;                    // an owned, writable copy
};
using SourceMap = std::map<std::string, SourceTensor>;

// One safetensors file (validated on open).
SourceMap open_safetensors_source(io::Env& env, const std::filesystem::path& file);
// A folder with an index (Hugging Face, ColossalAI or torch .bin flavour) or a single
// "<base>.safetensors"; `base` names the single file.
SourceMap open_tensor_folder(io::Env& env, const std::filesystem::path& dir,
                             const std::string& base);
// A torch pickle's tensors under `key` ("" = whole file), flattened to dotted names.
SourceMap open_torch_source(io::Env& env, const std::filesystem::path& file,
                            const std::string& key = "");
// Tensors already in memory.
SourceMap source_from_tensors(const TensorMap& tensors);

// Fills `target` from `source` (rules of LoadTargets): in place when it has entries, else with
// owned copies of everything. Names are reported prefixed with "<component>:". Strict problems
// are thrown as one Error(Mismatch) listing all of them before anything is written.
void fill_tensor_map(const SourceMap& source, TensorMap& target, const std::string& component,
                     bool strict, LoadResult& result);

}  // namespace ckptio::checkpoint
