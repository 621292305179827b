// ckptio convert SRC DST [--key DOTTED.PATH] [--dedupe-shared]: rewrite a checkpoint as
// safetensors, proven by reading the output back. The source kind decides the converter; each
// kind has one function here so that more (sharded folders, dtype casts) plug into the switch.
#include <fmt/core.h>

#include <filesystem>
#include <memory>
#include <string>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"
#include "command.h"
#include "convert_any.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace {

struct ConvertArgs {
  std::string src;
  std::string dst;
  std::string key;
  bool dedupe_shared = false;
  std::string max_shard_size;  // --max-shard-size, --dtype: the general converter
  std::string dtype;
};

int convert_torch(const ConvertArgs& args) {
  torch::TorchConvertOptions options;
  options.key = args.key;
  options.dedupe_shared = args.dedupe_shared;
  const auto report = torch::convert_torch_to_safetensors(args.src, args.dst, options);
  fmt::print("converted {} -> {}: {} tensors ({} bytes), {} metadata values, {} aliases; "
             "read back and verified bit for bit\n",
             printable(args.src), printable(args.dst), report.tensors_written, report.data_bytes,
             report.metadata_values, report.aliases);
  return 0;
}

int convert(const ConvertArgs& args) {
  const SourceKind kind = detect_source_kind(args.src);
  const bool torch_to_file = (kind == SourceKind::TorchZip || kind == SourceKind::TorchLegacy ||
                              kind == SourceKind::TorchTar) &&
                             args.dst.ends_with(".safetensors") && args.max_shard_size.empty() &&
                             args.dtype.empty();
  if (kind != SourceKind::Missing && !torch_to_file && !args.dedupe_shared) {
    return convert_any(args.src, args.dst, args.key, args.max_shard_size, args.dtype);
  }
  switch (kind) {
    case SourceKind::Missing:
      throw Error(ErrorCode::NotFound, "'" + args.src + "' does not exist");
    case SourceKind::TorchZip:
    case SourceKind::TorchLegacy:
    case SourceKind::TorchTar:  // the reader refuses it with a precise message
      return convert_torch(args);
    default:
      break;
  }
  throw Error(ErrorCode::Unsupported, "'" + args.src + "': cannot convert a " +
                                          std::string(source_kind_name(kind)) + " source");
}

}  // namespace

void register_convert(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "convert",
      "Convert any source (.pt/.pth/.bin, safetensors file, sharded folder, training checkpoint "
      "or one of its components) to one .safetensors file or a sharded folder, optionally casting "
      "float tensors; the output is read back and compared before success is reported");
  auto args = std::make_shared<ConvertArgs>();
  cmd->add_option("SRC", args->src, "source: a file, a folder, CKPT/model|ema|optimizer, or hf://org/name[@rev][/path]")
      ->required();
  cmd->add_option("DST", args->dst,
                  "output: a path ending in .safetensors is one file; anything else a sharded folder")
      ->required();
  cmd->add_option("--key", args->key, "dotted path of the object to convert (default: all)");
  cmd->add_flag("--dedupe-shared", args->dedupe_shared,
                "write identical views of a shared storage once; aliases go into the metadata");
  cmd->add_option("--max-shard-size", args->max_shard_size,
                  "shard the output into a folder: 5GB, 500MB, 2GiB, bytes (default 5GB)");
  cmd->add_option("--dtype", args->dtype, "cast float tensors: bf16, f16 or f32");
  cmd->callback([&action, args] { action = [args] { return convert(*args); }; });
}

}  // namespace ckptio::cli
