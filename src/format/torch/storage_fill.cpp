#include "format/torch/storage_fill.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "ckptio/error.h"
#include "ckptio/parallel_reader.h"
#include "core/executor.h"
#include "format/torch/zip_crc32.h"

namespace ckptio::pt {

namespace {

constexpr size_t kTaskBytes = size_t{16} << 20;  // unit of work handed to a thread
constexpr size_t kStepBytes = size_t{256} << 10;  // copy then CRC while the bytes are in cache

struct Task {
  size_t index;   // into pending
  size_t offset;  // within the record
  size_t size;
  uint32_t crc = 0;
};

void swap_copy(std::byte* dst, const std::byte* src, size_t n, size_t unit) {
  for (size_t i = 0; i + unit <= n; i += unit) {
    for (size_t k = 0; k < unit; ++k) dst[i + k] = src[i + unit - 1 - k];
  }
}

}  // namespace

void fill_storages(std::vector<PendingStorage>& pending, bool big_endian, bool owned,
                   unsigned threads) {
  std::vector<std::byte*> dst(pending.size(), nullptr);
  std::vector<size_t> swap_unit(pending.size(), 0);
  std::vector<Task> tasks;
  for (size_t i = 0; i < pending.size(); ++i) {
    PendingStorage& p = pending[i];
    TorchStorage& s = *p.storage;
    const size_t item = static_cast<size_t>(dtype_bits(s.dtype) / 8);
    if (big_endian && item > 1) swap_unit[i] = s.dtype == DType::C64 ? 4 : item;
    if (owned || swap_unit[i] != 0) {
      // Large storages get 2 MiB-aligned memory advised for huge pages: faulting in fresh
      // memory 4 KiB at a time costs more than the copy itself.
      std::shared_ptr<std::byte> buf = io::allocate_read_buffer(p.raw.size());
      dst[i] = buf.get();
      s.bytes = std::span<const std::byte>(buf.get(), p.raw.size());
      s.owner = std::move(buf);
      s.zero_copy = false;
    } else {
      s.bytes = p.raw;
      s.owner = p.raw_owner;
      s.zero_copy = true;
    }
    if (dst[i] == nullptr && !p.check_crc) continue;
    for (size_t off = 0; off < p.raw.size(); off += kTaskBytes) {
      tasks.push_back(Task{i, off, std::min(kTaskBytes, p.raw.size() - off)});
    }
  }

  uint64_t total = 0;
  for (const Task& t : tasks) total += t.size;
  // Threads pay off only for real volumes.
  const uint64_t useful = std::max<uint64_t>(1, total / kTaskBytes);
  const unsigned n_threads =
      detail::thread_count(threads, static_cast<size_t>(std::min<uint64_t>(tasks.size(), useful)));
  detail::parallel_for(tasks.size(), n_threads, [&](size_t t) {
    Task& task = tasks[t];
    const PendingStorage& p = pending[task.index];
    uint32_t crc = 0;
    for (size_t step = 0; step < task.size; step += kStepBytes) {
      const size_t n = std::min(kStepBytes, task.size - step);
      const std::byte* src = p.raw.data() + task.offset + step;
      if (std::byte* out = dst[task.index]; out != nullptr) {
        out += task.offset + step;
        if (swap_unit[task.index] != 0) {
          swap_copy(out, src, n, swap_unit[task.index]);
        } else {
          std::memcpy(out, src, n);
          src = out;  // same bytes, now in cache
        }
      }
      if (p.check_crc) crc = zip_crc32(crc, {src, n});
    }
    task.crc = crc;
  }, {.what = "a storage copy thread"});

  // Per record, combine the chunk CRCs in order and compare.
  for (size_t t = 0; t < tasks.size();) {
    const size_t index = tasks[t].index;
    uint32_t crc = tasks[t].crc;
    size_t u = t + 1;
    for (; u < tasks.size() && tasks[u].index == index; ++u) {
      crc = static_cast<uint32_t>(crc32_combine(crc, tasks[u].crc, static_cast<z_off_t>(tasks[u].size)));
    }
    const PendingStorage& p = pending[index];
    if (p.check_crc && crc != p.crc32) {
      throw Error(ErrorCode::Corrupt, p.what + " fails its CRC-32 check");
    }
    t = u;
  }
  // An empty record has CRC 0 and no task.
  for (const PendingStorage& p : pending) {
    if (p.check_crc && p.raw.empty() && p.crc32 != 0) {
      throw Error(ErrorCode::Corrupt, p.what + " fails its CRC-32 check");
    }
  }
}

}  // namespace ckptio::pt
