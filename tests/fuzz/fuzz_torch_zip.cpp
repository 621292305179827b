// libFuzzer target: a whole torch.save file (zip archive or legacy stream) from arbitrary bytes:
// zip directory parsing, record bounds, CRCs, the unpickler, storages and views. Only
// ckptio::Error may escape; the materialised tensors are bounded by a small expansion budget.
#include <cstddef>
#include <cstdint>
#include <span>

#include "ckptio/error.h"
#include "ckptio/torch_pickle.h"
#include "format/torch/zip_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ckptio;
  using namespace ckptio::pt;
  const auto bytes = std::as_bytes(std::span(data, size));
  try {
    const ZipArchive zip = ZipArchive::parse(bytes, "fuzz");
    for (const auto& e : zip.entries()) zip.verify_crc(e);
  } catch (const Error&) {
  }
  TorchLoadOptions options;
  // Small floors (the limits grow 16 bytes or nodes per input byte): the walks below stay small.
  options.max_expanded_bytes = 1 << 20;
  options.max_expanded_nodes = 1 << 16;
  // Off half of the time: with CRCs on, almost every mutation of a record stops at the checksum.
  options.verify_crc = size % 2 == 0;
  try {
    const TorchFile file = parse_torch_bytes(bytes, "fuzz", nullptr, options);
    for (const auto& [name, t] : flatten_tensors(file.root)) (void)t.contiguous();
    (void)value_to_json(file.root);
  } catch (const Error&) {
  }
  return 0;
}
