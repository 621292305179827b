#include "format/sharded/chunked_copy.h"

#include <cstring>
#include <memory>
#include <string>

#include "ckptio/error.h"
#include "format/sharded/parallel_for.h"

namespace ckptio::detail {

void add_copy_chunks(std::vector<CopyChunk>& out, const io::ReadableFile* file, uint64_t offset,
                     std::span<const std::byte> src, DType from, DType to, uint64_t count,
                     std::span<std::byte> dst, std::string_view name) {
  if (from != to && !can_convert(from, to)) {
    throw Error(ErrorCode::Mismatch, "cannot convert tensor '" + std::string(name) + "' from " +
                                         std::string(dtype_name(from)) + " to " +
                                         std::string(dtype_name(to)));
  }
  if (from == to) {
    const uint64_t total = dst.size();
    for (uint64_t off = 0; off < total; off += kReadChunk) {
      const uint64_t n = std::min(kReadChunk, total - off);
      CopyChunk c{file, offset + off, {}, n, from, to, dst.subspan(off, n)};
      if (!file) c.src = src.subspan(off, n);
      out.push_back(c);
    }
    return;
  }
  // Convertible dtypes are whole bytes per element.
  const uint64_t in_size = static_cast<uint64_t>(dtype_bits(from)) / 8;
  const uint64_t out_size = static_cast<uint64_t>(dtype_bits(to)) / 8;
  const uint64_t per_chunk = std::max<uint64_t>(1, kReadChunk / std::max(in_size, out_size) / 4);
  for (uint64_t e = 0; e < count; e += per_chunk) {
    const uint64_t n = std::min(per_chunk, count - e);
    CopyChunk c{file, offset + e * in_size, {}, n * in_size, from, to,
                dst.subspan(e * out_size, n * out_size)};
    if (!file) c.src = src.subspan(e * in_size, n * in_size);
    out.push_back(c);
  }
}

uint64_t run_copy_chunks(const std::vector<CopyChunk>& chunks, int threads) {
  parallel_for(chunks.size(), threads, [&](size_t i) {
    const CopyChunk& c = chunks[i];
    if (c.from == c.to) {
      if (c.file) {
        c.file->read_exact(c.offset, c.dst);
      } else if (!c.dst.empty()) {
        std::memcpy(c.dst.data(), c.src.data(), c.dst.size());
      }
      return;
    }
    const uint64_t count = c.src_bytes / (static_cast<uint64_t>(dtype_bits(c.from)) / 8);
    if (c.file) {
      // At most 16 MiB (see add_copy_chunks); cheap next to the read it stages.
      const auto scratch = std::make_unique_for_overwrite<std::byte[]>(c.src_bytes);
      c.file->read_exact(c.offset, std::span(scratch.get(), c.src_bytes));
      convert_elements(c.from, scratch.get(), c.to, c.dst.data(), count);
    } else {
      convert_elements(c.from, c.src.data(), c.to, c.dst.data(), count);
    }
  });
  uint64_t total = 0;
  for (const auto& c : chunks) total += c.src_bytes;
  return total;
}

}  // namespace ckptio::detail
