// libFuzzer target: the restricted unpickler on arbitrary bytes. Any storage reference resolves to
// one small fake storage, so tensor rebuilds, view checks and materialisation are exercised too.
// Only ckptio::Error may escape the library; anything else (crash, leak, UB) is a finding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"
#include "format/torch/unpickler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ckptio;
  using namespace ckptio::pt;
  static const std::byte backing[256] = {};
  const StorageResolver resolve = [](const StorageRef& ref) -> std::shared_ptr<const TorchStorage> {
    auto s = std::make_shared<TorchStorage>();
    s->key = ref.key;
    s->dtype = ref.dtype;
    const int bits = dtype_bits(ref.dtype);
    if (bits % 8 != 0) throw Error(ErrorCode::Unsupported, "sub-byte dtype");
    s->numel = sizeof backing / static_cast<size_t>(bits / 8);
    s->bytes = std::span(backing, s->numel * static_cast<size_t>(bits / 8));
    return s;
  };
  UnpickleOptions options;
  // Small budgets: whatever the input, the walks below stay small and fast.
  options.max_expanded_bytes = 1 << 20;
  options.max_expanded_nodes = 1 << 16;
  options.max_depth = 256;
  try {
    const auto result = unpickle(std::as_bytes(std::span(data, size)), 0, "fuzz", resolve, options);
    (void)value_to_json(result.value);
    for (const auto& [name, t] : flatten_tensors(result.value)) (void)t.to_owned();
  } catch (const Error&) {
  }
  return 0;
}
