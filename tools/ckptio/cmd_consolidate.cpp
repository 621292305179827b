// ckptio consolidate CKPT DST [--max-shard-size S]: the full tensors of a distributed checkpoint
// as a Hugging Face folder (model.safetensors, or shards + model.safetensors.index.json).
#include <fmt/core.h>

#include <memory>
#include <string>

#include "ckptio/dist.h"
#include "ckptio/sharded.h"
#include "command.h"

namespace ckptio::cli {

void register_consolidate(Commands& commands) {
  Command& cmd = add_command(
      commands, "consolidate",
      "Write the full tensors of a distributed checkpoint (saved on any number of ranks) as a "
      "Hugging Face folder; memory stays near the largest tensor");
  struct Args {
    std::string src;
    std::string dst;
    std::string max_shard_size;
  };
  auto args = std::make_shared<Args>();
  cmd.positional("CKPT", args->src, "a distributed checkpoint folder (holding ckptio.distributed.json)");
  cmd.positional("DST", args->dst, "the output folder (new, or empty)");
  cmd.option("--max-shard-size", args->max_shard_size,
             "largest shard, e.g. 5GB (default), 500MB, 2GiB or a byte count");
  cmd.action([args] {
    dist::ConsolidateOptions options;
    if (!args->max_shard_size.empty()) options.max_shard_size = parse_size(args->max_shard_size);
    const dist::ConsolidateReport r = dist::consolidate(args->src, args->dst, options);
    fmt::print("consolidated {} tensors ({} bytes) into {} file{} in {}\n", r.tensors,
               r.tensor_bytes, r.files.size(), r.files.size() == 1 ? "" : "s", args->dst);
    return 0;
  });
}

}  // namespace ckptio::cli
