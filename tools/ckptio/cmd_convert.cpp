// ckptio convert SRC DST [--key DOTTED.PATH] [--dtype T] [--max-shard-size S] [--dedupe-shared]
// [--in-place]: rewrite any source as safetensors, proven by reading the output back.
#include <fmt/core.h>

#include <filesystem>
#include <memory>
#include <string>

#include "ckptio/error.h"
#include "cli_source.h"
#include "command.h"
#include "convert_any.h"

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

int convert(const ConvertArgs& args) {
  const CliSource s = resolve_cli_source(args.src);
  ConvertRequest request;
  request.label = args.src;
  request.src = s.path;
  request.dst = args.dst;
  request.source = s.options;
  request.source.torch_key = args.key;
  request.max_shard_size = args.max_shard_size;
  request.dtype = args.dtype;
  request.in_place = args.in_place;
  request.dedupe_shared = args.dedupe_shared;
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
