// libFuzzer target: a DCP `.metadata` pickle on arbitrary bytes: the restricted unpickler with the
// DCP allow-list, then the field-by-field parse and the chunk checks (boxes, overlaps, coverage).
// Only ckptio::Error may escape the library; anything else (crash, leak, UB) is a finding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "ckptio/dcp.h"
#include "ckptio/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto m = ckptio::dcp::parse_dcp_metadata(std::as_bytes(std::span(data, size)), "fuzz");
    (void)m;
  } catch (const ckptio::Error&) {
  }
  return 0;
}
