#include "convert_any.h"

#include <fmt/core.h>

#include "ckptio/dtype.h"
#include "ckptio/error.h"
#include "ckptio/load.h"
#include "ckptio/sharded.h"
#include "source_kind.h"

namespace ckptio::cli {

int convert_any(const std::string& src, const std::string& dst, const std::string& key,
                const std::string& max_shard_size, const std::string& dtype) {
  ConvertOptions options;
  options.source.torch_key = key;
  if (!max_shard_size.empty()) options.max_shard_size = parse_size(max_shard_size);
  if (!dtype.empty()) options.dtype = dtype_from_user_string(dtype);
  const ConvertReport r = convert_checkpoint(src, dst, options);
  fmt::print("converted {} ({}) -> {}: {} tensors, {} bytes, {} shard(s){}\n", printable(src),
             source_kind_name(r.source.kind), printable(dst), r.tensors, r.tensor_bytes, r.shards,
             r.converted ? fmt::format(", {} converted to {}", r.converted, dtype) : std::string());
  // Prove the output: it must read back equal to the source (after the cast, if any).
  if (!options.dtype) {
    DiffOptions same;
    same.source = options.source;
    same.equal_nan = true;
    const DiffReport check = diff_checkpoints(src, dst, same);
    if (!check.equal()) {
      throw Error(ErrorCode::Mismatch, "read-back of '" + dst + "' differs from '" + src + "': " +
                                           check.differences.front());
    }
    fmt::print("read back and compared: {} tensors equal\n", check.compared);
  }
  return 0;
}

}  // namespace ckptio::cli
