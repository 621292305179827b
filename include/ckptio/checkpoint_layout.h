// The training-checkpoint folder layout in one place: the names of the files and folders inside
// "epoch{E}-global_step{S}/" (checkpoint_folder_name of checkpoint_io.h). Every reader and writer
// of the layout (CheckpointIO, the loaders and source resolution, the CLI) takes its names from
// here.
#pragma once

#include <string>
#include <string_view>

namespace ckptio::checkpoint {

inline constexpr std::string_view kModelDir = "model";          // model.safetensors or shards
inline constexpr std::string_view kModelBaseName = "model";     // base name of its files
inline constexpr std::string_view kEmaName = "ema";             // ema.safetensors, or ema/ sharded
inline constexpr std::string_view kOptimizerDir = "optimizer";  // optimizer.safetensors (base too)
inline constexpr std::string_view kOptimizerJsonName = "optimizer/optimizer.json";
inline constexpr std::string_view kLrSchedulerName = "lr_scheduler.json";
inline constexpr std::string_view kSamplerName = "sampler.json";
inline constexpr std::string_view kRunningStatesName = "running_states.json";
inline constexpr std::string_view kManifestName = "ckptio.manifest.json";  // written last
// Forms the EMA weights take in other tools' checkpoints (ColossalAI / Open-Sora).
inline constexpr std::string_view kEmaTorchName = "ema.pt";
inline constexpr std::string_view kModelTorchName = "model.pt";

// "state.<param>.<key>": the name of one optimizer state tensor in optimizer/.
inline std::string optimizer_tensor_name(std::string_view param, std::string_view key) {
  return "state." + std::string(param) + "." + std::string(key);
}

}  // namespace ckptio::checkpoint
