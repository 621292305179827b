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
  if (!request.max_shard_size.empty()) options.max_shard_size = parse_size(request.max_shard_size);
  if (!request.dtype.empty()) options.dtype = dtype_from_user_string(request.dtype);
  const ConvertReport r = convert_checkpoint(request.src, request.dst, options);
  for (const auto& name : r.removed_temp_files) {
    fmt::print("removed {}, left by a convert that did not finish\n", printable(name));
  }
  fmt::print("converted {} ({}) -> {}: {} tensors, {} bytes, {} shard(s){}\n",
             printable(request.label), source_kind_name(r.source.kind),
             printable(request.dst.string()), r.tensors, r.tensor_bytes, r.shards,
             r.converted ? fmt::format(", {} converted to {}", r.converted, request.dtype)
                         : std::string());
  if (r.verified == r.tensors && r.shards == 1 && request.dst.string().ends_with(".safetensors")) {
    fmt::print("read back and compared: {} tensors equal\n", r.verified);
    return 0;
  }
  // A folder output: it must read back equal to the source (after the cast, if any).
  if (!options.dtype) {
    DiffOptions same;
    same.source = options.source;
    same.equal_nan = true;
    const DiffReport check = diff_checkpoints(request.src, request.dst, same);
    if (!check.equal()) {
      throw Error(ErrorCode::Mismatch, "read-back of '" + request.dst.string() + "' differs from '" +
                                           request.label + "': " + check.differences.front());
    }
    fmt::print("read back and compared: {} tensors equal\n", check.compared);
  }
  return 0;
}

}  // namespace ckptio::cli
