#include "dist_helpers.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "ckptio/error.h"

namespace ckptio::dist::testing {

std::vector<std::byte> global_bytes(const std::string& name, DType dtype, const Shape& shape) {
  std::vector<std::byte> out(tensor_nbytes(dtype, shape));
  uint64_t h = 1469598103934665603ull;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  for (size_t i = 0; i < out.size(); ++i) {
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h += i;
    out[i] = static_cast<std::byte>(h >> 32);
  }
  return out;
}

std::string layout_name(Layout l) {
  switch (l) {
    case Layout::Replicated: return "replicated";
    case Layout::Rows: return "rows";
    case Layout::Grid: return "grid";
    case Layout::Flat: return "flat";
    case Layout::TwoRowBlocks: return "two_row_blocks";
  }
  return "?";
}

namespace {

// Splits [0, n) into `parts` nearly equal blocks; block i.
std::pair<int64_t, int64_t> block(int64_t n, int parts, int i) {
  const int64_t base = n / parts, extra = n % parts;
  const int64_t begin = i * base + std::min<int64_t>(i, extra);
  return {begin, base + (i < extra ? 1 : 0)};
}

ShardedTensor rows(const std::string& name, DType dtype, const Shape& shape, int parts, int i) {
  const auto [begin, len] = block(shape[0], parts, i);
  std::vector<int64_t> offsets(shape.size(), 0);
  offsets[0] = begin;
  Shape local = shape;
  local[0] = len;
  return ShardedTensor::block(name, dtype, shape, offsets, local);
}

}  // namespace

std::vector<ShardedTensor> pieces_for(const std::string& name, DType dtype, const Shape& shape,
                                      Layout l, int rank, int world) {
  if (l != Layout::Replicated && l != Layout::Flat && shape.empty()) l = Layout::Replicated;
  if (l == Layout::Grid && shape.size() < 2) l = Layout::Rows;
  switch (l) {
    case Layout::Replicated: return {ShardedTensor::replicated(name, dtype, shape)};
    case Layout::Rows: return {rows(name, dtype, shape, world, rank)};
    case Layout::TwoRowBlocks:
      return {rows(name, dtype, shape, 2 * world, rank), rows(name, dtype, shape, 2 * world, rank + world)};
    case Layout::Grid: {
      const int a = world >= 4 ? 2 : world;  // a x b grid over dims 0 and 1
      const int b = world / a;
      const auto [r0, rn] = block(shape[0], a, rank % a);
      const auto [c0, cn] = block(shape[1], b, rank / a);
      std::vector<int64_t> offsets(shape.size(), 0);
      offsets[0] = r0;
      offsets[1] = c0;
      Shape local = shape;
      local[0] = rn;
      local[1] = cn;
      return {ShardedTensor::block(name, dtype, shape, offsets, local)};
    }
    case Layout::Flat: return {ShardedTensor::zero_partition(name, dtype, shape, rank, world)};
  }
  return {};
}

std::vector<std::byte> local_bytes(const ShardedTensor& t, const std::vector<std::byte>& global) {
  const size_t es = static_cast<size_t>(dtype_bits(t.dtype) / 8);
  std::vector<std::byte> out(t.local_nbytes());
  switch (t.placement) {
    case Placement::Replicated: return global;
    case Placement::FlatRange: {
      const uint64_t numel = shape_numel(t.global_shape);
      const uint64_t end = std::min(numel, t.flat_begin + t.flat_length);
      const uint64_t real = end > t.flat_begin ? end - t.flat_begin : 0;
      if (real > 0) std::memcpy(out.data(), global.data() + t.flat_begin * es, real * es);
      break;
    }
    case Placement::Block: {
      // Row-major walk over the box.
      const size_t n = t.global_shape.size();
      const uint64_t count = shape_numel(t.box.shape);
      std::vector<int64_t> idx(n, 0);
      for (uint64_t e = 0; e < count; ++e) {
        uint64_t g = 0;
        for (size_t d = 0; d < n; ++d) g = g * static_cast<uint64_t>(t.global_shape[d]) + static_cast<uint64_t>(t.box.offsets[d] + idx[d]);
        std::memcpy(out.data() + e * es, global.data() + g * es, es);
        for (size_t d = n; d-- > 0;) {
          if (++idx[d] < t.box.shape[d]) break;
          idx[d] = 0;
        }
      }
      break;
    }
  }
  return out;
}

// Every layout kind at once, with uneven splits and ZeRO padding for 2 and 4 ranks.
const std::vector<Spec>& specs() {
  static const std::vector<Spec> s{
      {"rep", DType::F32, {3, 5}, Layout::Replicated},
      {"rep.scalar", DType::F64, {}, Layout::Replicated},
      {"rep.empty", DType::F32, {0, 4}, Layout::Replicated},
      {"rep.big", DType::I64, {40}, Layout::Replicated},
      {"rows", DType::BF16, {10, 6}, Layout::Rows},
      {"rows.few", DType::F32, {3, 2}, Layout::Rows},  // 4 ranks: one holds no row
      {"grid", DType::I32, {6, 9}, Layout::Grid},
      {"flat", DType::F16, {7, 3}, Layout::Flat},
      {"flat.3d", DType::F32, {3, 5, 7}, Layout::Flat},
      {"flat.1d", DType::U8, {13}, Layout::Flat},
      {"two_blocks", DType::U8, {16, 4}, Layout::TwoRowBlocks},
  };
  return s;
}

std::vector<std::exception_ptr> run_ranks(int world, std::chrono::milliseconds timeout,
                                          const std::function<void(int, Communicator&)>& fn) {
  return run_first_ranks(make_thread_group(world, timeout), world, fn);
}

std::vector<std::exception_ptr> run_first_ranks(
    const std::vector<std::unique_ptr<Communicator>>& comms, int count,
    const std::function<void(int, Communicator&)>& fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(count));
  std::vector<std::thread> threads;
  for (int r = 0; r < count; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r, *comms[static_cast<size_t>(r)]);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

std::vector<std::exception_ptr> save_on_ranks(int world, const std::filesystem::path& dir,
                                              const std::vector<Spec>& tensors,
                                              const SaveOptions& options) {
  using namespace std::chrono_literals;
  return run_ranks(world, 120s, [&](int rank, Communicator& comm) {
    std::vector<std::vector<std::byte>> buffers;
    std::vector<SaveItem> items;
    for (const Spec& s : tensors) {
      const auto global = global_bytes(s.name, s.dtype, s.shape);
      for (ShardedTensor& t : pieces_for(s.name, s.dtype, s.shape, s.saved, rank, world)) {
        buffers.push_back(local_bytes(t, global));
        items.push_back({std::move(t), {}});
      }
    }
    for (size_t i = 0; i < items.size(); ++i) items[i].bytes = buffers[i];
    SaveOptions o = options;
    o.sync = false;
    save(comm, dir, items, o);
  });
}

std::string error_message(const std::exception_ptr& e) {
  if (!e) return "";
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    return err.what();
  } catch (const std::exception& other) {
    ADD_FAILURE() << "not a ckptio::Error: " << other.what();
  }
  return "?";
}

}  // namespace ckptio::dist::testing
