// The one pass over tensor bytes a load makes after the pickle is understood: CRC-32 checks,
// byte swapping and copies into owned memory, spread over threads in chunks so that one big
// record is not one thread's job.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ckptio/torch_pickle.h"

namespace ckptio::pt {

struct PendingStorage {
  std::shared_ptr<TorchStorage> storage;  // bytes/owner/zero_copy are set by fill_storages
  std::span<const std::byte> raw;         // the record's bytes in the file buffer
  std::shared_ptr<const void> raw_owner;  // keeps `raw` alive when it is handed out zero-copy
  bool check_crc = false;
  uint32_t crc32 = 0;
  std::string what;  // "<file>: zip record '<name>'" for messages
};

// Fills every storage: zero-copy when neither swapping (big_endian and items wider than a byte)
// nor `owned` asks for a copy, else into a fresh heap buffer; checks CRCs where asked. Throws
// Error(Corrupt) naming the first record whose CRC does not match.
void fill_storages(std::vector<PendingStorage>& pending, bool big_endian, bool owned,
                   unsigned threads);

}  // namespace ckptio::pt
