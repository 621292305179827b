#include "convert_any.h"

#include <fmt/core.h>

#include "ckptio/dtype.h"
#include "ckptio/error.h"
#include "ckptio/load.h"
#include "ckptio/sharded.h"
#include "source_kind.h"

namespace ckptio::cli {

int convert_any(const ConvertRequest& request) {
  ConvertOptions options;
  options.source = request.source;
  options.in_place = request.in_place;
  options.dedupe_shared = request.dedupe_shared;
  if (!request.max_shard_size.empty()) options.max_shard_size = parse_size(request.max_shard_size);
  if (!request.dtype.empty()) options.dtype = dtype_from_user_string(request.dtype);
  // The library reads the output back and compares it with the source before it returns.
  const ConvertReport r = convert_checkpoint(request.src, request.dst, options);
  for (const auto& name : r.removed_temp_files) {
    fmt::print("removed {}, left by a convert that did not finish\n", printable(name));
  }
  if (request.dedupe_shared) {
    fmt::print("converted {} -> {}: {} tensors ({} bytes), {} aliases; read back and verified bit "
               "for bit\n",
               printable(request.label), printable(request.dst.string()), r.tensors,
               r.tensor_bytes, r.aliases);
    return 0;
  }
  fmt::print("converted {} ({}) -> {}: {} tensors, {} bytes, {} shard(s){}\n",
             printable(request.label), source_kind_name(r.source.kind),
             printable(request.dst.string()), r.tensors, r.tensor_bytes, r.shards,
             r.converted ? fmt::format(", {} converted to {}", r.converted, request.dtype)
                         : std::string());
  fmt::print("read back and compared: {} tensors equal\n", r.verified);
  return 0;
}

}  // namespace ckptio::cli
