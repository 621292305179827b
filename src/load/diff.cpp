// diff_checkpoints: names, dtypes, shapes, then values (bytes first, numbers when they differ).
#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <string>

#include "ckptio/error.h"
#include "ckptio/load.h"

namespace ckptio {
namespace {

constexpr size_t kBlock = size_t{1} << 20;  // elements converted to F64 at a time

std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// numpy.isclose(a, b, rtol, atol, equal_nan) for one pair.
bool values_close(double a, double b, const DiffOptions& options) {
  if (std::isnan(a) || std::isnan(b)) return options.equal_nan && std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= options.atol + options.rtol * std::fabs(b);
}

// First element (as a message) whose values differ beyond the tolerance, or empty.
std::string compare_values(const std::string& name, const Tensor& a, const Tensor& b,
                           const DiffOptions& options) {
  const DType dt = a.dtype();
  const bool floats = dtype_is_float(dt) && can_convert(dt, DType::F64);
  // The same bytes are the same values (a NaN is equal to a bit-identical NaN: `diff x x` is
  // always equal); only elements whose bytes differ are compared as numbers.
  if (a.nbytes() == 0 || std::memcmp(a.bytes().data(), b.bytes().data(), a.nbytes()) == 0) return {};
  if (!floats) {
    // Exact types: report the first differing byte's element.
    size_t i = 0;
    while (a.bytes()[i] == b.bytes()[i]) ++i;
    const uint64_t elem = static_cast<uint64_t>(i) * 8 / static_cast<uint64_t>(dtype_bits(dt));
    return name + ": values differ (first at element " + std::to_string(elem) + ")";
  }
  const uint64_t n = a.numel();
  const size_t esize = static_cast<size_t>(dtype_bits(dt)) / 8;
  auto xa = std::make_unique_for_overwrite<double[]>(kBlock);
  auto xb = std::make_unique_for_overwrite<double[]>(kBlock);
  uint64_t bad = 0;
  uint64_t first = 0;
  double first_a = 0, first_b = 0, max_abs = 0;
  for (uint64_t start = 0; start < n; start += kBlock) {
    const size_t m = static_cast<size_t>(std::min<uint64_t>(kBlock, n - start));
    convert_elements(dt, a.bytes().data() + start * esize, DType::F64, xa.get(), m);
    convert_elements(dt, b.bytes().data() + start * esize, DType::F64, xb.get(), m);
    for (size_t k = 0; k < m; ++k) {
      const double va = xa[k], vb = xb[k];
      if (values_close(va, vb, options)) continue;
      if (std::memcmp(a.bytes().data() + (start + k) * esize,
                      b.bytes().data() + (start + k) * esize, esize) == 0) {
        continue;  // a bit-identical NaN
      }
      if (bad++ == 0) {
        first = start + k;
        first_a = va;
        first_b = vb;
      }
      // A NaN or an infinity among the differences makes the largest difference NaN or inf
      // (std::max would drop a NaN).
      const double d = std::fabs(va - vb);
      if (std::isnan(d) || d > max_abs) max_abs = std::isnan(max_abs) ? max_abs : d;
    }
  }
  if (bad == 0) return {};
  return name + ": " + std::to_string(bad) + " of " + std::to_string(n) +
         " values differ (first at element " + std::to_string(first) + ": " + fmt_double(first_a) +
         " vs " + fmt_double(first_b) + "; max abs diff " + fmt_double(max_abs) + ")";
}

}  // namespace

DiffReport diff_checkpoints(const std::filesystem::path& a, const std::filesystem::path& b,
                            const DiffOptions& options) {
  if (options.atol < 0 || options.rtol < 0 || std::isnan(options.atol) || std::isnan(options.rtol)) {
    throw Error(ErrorCode::InvalidArgument, "atol and rtol must be non-negative numbers");
  }
  const CheckpointReader ra = CheckpointReader::open(a, options.source, ReadMode::Mmap);
  const CheckpointReader rb = CheckpointReader::open(b, options.source, ReadMode::Mmap);
  DiffReport report;
  const auto add = [&](std::string line) {
    if (report.differences.size() < options.max_differences) report.differences.push_back(std::move(line));
    ++report.difference_count;
  };
  std::map<std::string, const SourceTensorInfo*> in_b;
  for (const auto& t : rb.tensors()) in_b.emplace(t.name, &t);
  std::set<std::string> in_a;
  for (const auto& t : ra.tensors()) {
    in_a.insert(t.name);
    auto it = in_b.find(t.name);
    if (it == in_b.end()) {
      add(t.name + ": only in A");
      continue;
    }
    const SourceTensorInfo& u = *it->second;
    if (t.dtype != u.dtype || t.shape != u.shape) {
      add(t.name + ": A is " + std::string(dtype_name(t.dtype)) + " " + shape_to_string(t.shape) +
          ", B is " + std::string(dtype_name(u.dtype)) + " " + shape_to_string(u.shape));
      continue;
    }
    ++report.compared;
    std::string d = compare_values(t.name, ra.tensor(t.name), rb.tensor(t.name), options);
    if (!d.empty()) add(std::move(d));
  }
  for (const auto& t : rb.tensors()) {
    if (!in_a.count(t.name)) add(t.name + ": only in B");
  }
  return report;
}

}  // namespace ckptio
