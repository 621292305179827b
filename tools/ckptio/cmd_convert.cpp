// ckptio convert SRC DST [--key DOTTED.PATH] [--dtype T] [--max-shard-size S] [--dedupe-shared]
// [--in-place]: rewrite any source as safetensors, proven by reading the output back.
#include <fmt/core.h>

#include <filesystem>
#include <memory>
#include <string>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"
#include "cli_source.h"
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
  bool in_place = false;
  std::string max_shard_size;
  std::string dtype;
};

// --dedupe-shared: torch's own converter, which knows which views share a storage.
int convert_torch_dedupe(const ConvertArgs& args, const std::filesystem::path& src) {
  const SourceKind kind = detect_source_kind(src);
  if (kind != SourceKind::TorchZip && kind != SourceKind::TorchLegacy && kind != SourceKind::TorchTar) {
    throw Error(ErrorCode::InvalidArgument, "--dedupe-shared needs a torch file (.pt/.pth/.bin) as the source");
  }
  if (!args.dst.ends_with(".safetensors") || !args.max_shard_size.empty() || !args.dtype.empty()) {
    throw Error(ErrorCode::InvalidArgument,
                "--dedupe-shared writes one .safetensors file, without --max-shard-size or --dtype");
  }
  std::error_code ec;
  if (!args.in_place && std::filesystem::equivalent(src, args.dst, ec)) {
    throw Error(ErrorCode::InvalidArgument, "the output '" + args.dst + "' is the input '" +
                                                args.src + "'; write elsewhere, or pass --in-place");
  }
  {
    // The same refusal as the general converter: a key must select tensors, and a lone tensor has
    // nothing to dedupe (the general converter names it by its key).
    pt::TorchLoadOptions lo;
    lo.verify_crc = false;  // the converter checks every record
    const pt::TorchFile f = pt::load_torch_file(src, lo);
    const pt::Value& v = pt::select_path(f.root, args.key);
    if (v.is_tensor()) {
      throw Error(ErrorCode::InvalidArgument, "key '" + args.key +
                                                  "' selects a single tensor: convert it without "
                                                  "--dedupe-shared");
    }
    if ((!v.is_dict() && !v.is_sequence()) || pt::flatten_tensors(v).empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  (args.key.empty() ? std::string("the file") : "key '" + args.key + "'") +
                      " holds no tensor");
    }
  }
  pt::TorchConvertOptions options;
  options.key = args.key;
  options.dedupe_shared = true;
  const auto report = pt::convert_torch_to_safetensors(src, args.dst, options);
  fmt::print("converted {} -> {}: {} tensors ({} bytes), {} metadata values, {} aliases; "
             "read back and verified bit for bit\n",
             printable(args.src), printable(args.dst), report.tensors_written, report.data_bytes,
             report.metadata_values, report.aliases);
  return 0;
}

int convert(const ConvertArgs& args) {
  const CliSource s = resolve_cli_source(args.src);
  if (args.dedupe_shared) return convert_torch_dedupe(args, s.path);
  ConvertRequest request;
  request.label = args.src;
  request.src = s.path;
  request.dst = args.dst;
  request.source = s.options;
  request.source.torch_key = args.key;
  request.max_shard_size = args.max_shard_size;
  request.dtype = args.dtype;
  request.in_place = args.in_place;
  return convert_any(request);
}

}  // namespace

void register_convert(Commands& commands) {
  Command& cmd = add_command(
      commands, "convert",
      "Convert any source (.pt/.pth/.bin, safetensors file, sharded folder, training checkpoint "
      "or one of its components) to one .safetensors file or a sharded folder, optionally casting "
      "float tensors; the output is read back and compared before success is reported");
  auto args = std::make_shared<ConvertArgs>();
  cmd.positional("SRC", args->src,
                 "a file, a folder, CKPT/model|ema|optimizer, or hf://org/name[@rev][/path]");
  cmd.positional("DST", args->dst,
                 "output: a path ending in .safetensors is one file; anything else a sharded folder");
  cmd.option("--key", args->key,
             "torch files: dotted path of the object to convert (default: all); a bare tensor is "
             "named by this path");
  cmd.flag("--dedupe-shared", args->dedupe_shared,
           "torch files: write identical views of a shared storage once; aliases go into the "
           "metadata");
  cmd.option("--max-shard-size", args->max_shard_size,
             "folder output: shard size, 5GB, 500MB, 2GiB, bytes (default 5GB)");
  cmd.option("--dtype", args->dtype, "cast float tensors: bf16, f16 or f32");
  cmd.flag("--in-place", args->in_place, "allow the output to replace the input");
  cmd.action([args] { return convert(*args); });
}

}  // namespace ckptio::cli
