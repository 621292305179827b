// diff_checkpoints compares float values as numpy.isclose does: the verdict for every case of a
// table is checked against numpy's own answer (system Python), in both directions (A vs B, B vs A).
// Cases include a NaN against a NaN with other bits ({NaN, -NaN}), which numpy and ckptio both
// call different unless equal_nan.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "ckptio/load.h"
#include "ckptio/safetensors.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

using testing::TempDir;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Case {
  double a, b;
};

const std::vector<Case> kCases = {
    {1, kInf},     {-5, kInf},   {kInf, -kInf}, {kInf, kInf}, {-kInf, -kInf}, {kInf, 1},
    {kNaN, 1},     {1, kNaN},    {kNaN, kNaN},  {kNaN, -kNaN}, {kNaN, kInf}, {0, 0},         {-0.0, 0},
    {1, 1.5},      {1.5, 1},     {1, 1 + 1e-10}, {1e-300, 0}, {100, 101},     {101, 100},
    {1, 2},        {2, 1},       {0, 1e-9},     {-1, 1},      {1e308, -1e308}, {3, 3},
};

struct Tolerance {
  double rtol, atol;
  bool equal_nan;
};

const std::vector<Tolerance> kTolerances = {
    {0, 0, false}, {1e-9, 0, false}, {1, 0, false},     {0.5, 0, false},
    {0, 1, false}, {0.01, 0, true},  {0, 1e-9, true},   {1e-9, 1e-12, false},
};

std::string repr(double v) {
  if (std::isnan(v)) return "float('nan')";
  if (std::isinf(v)) return v > 0 ? "float('inf')" : "float('-inf')";
  std::ostringstream s;
  s.precision(17);
  s << v;
  return "float('" + s.str() + "')";
}

// numpy's verdict for every (tolerance, case, direction), one character each ('1' close).
std::string numpy_answers(const TempDir& dir) {
  std::string cases = "[", tols = "[";
  for (const auto& c : kCases) cases += "(" + repr(c.a) + "," + repr(c.b) + "),";
  for (const auto& t : kTolerances) {
    tols += "(" + repr(t.rtol) + "," + repr(t.atol) + "," + (t.equal_nan ? "True" : "False") + "),";
  }
  const std::string script = "import numpy as np\ncases=" + cases + "]\ntols=" + tols +
                             "]\nout=''\n"
                             "for r,a,e in tols:\n"
                             "  for x,y in cases:\n"
                             "    out+='1' if np.isclose(x,y,rtol=r,atol=a,equal_nan=e) else '0'\n"
                             "    out+='1' if np.isclose(y,x,rtol=r,atol=a,equal_nan=e) else '0'\n"
                             "open('" + (dir / "numpy.txt").string() + "','w').write(out)\n";
  if (testing::run_python(dir.path(), script) != 0) return {};
  return testing::read_file(dir / "numpy.txt");
}

// One single-element F64 tensor per case, named c<i>.
void write_side(const std::filesystem::path& path, bool take_a) {
  std::vector<double> values;
  for (const auto& c : kCases) values.push_back(take_a ? c.a : c.b);
  std::vector<NamedTensor> tensors;
  for (size_t i = 0; i < values.size(); ++i) {
    tensors.push_back({"c" + std::to_string(i),
                       {DType::F64, {1}, std::as_bytes(std::span(&values[i], 1))}});
  }
  SafetensorsWriteOptions o;
  o.sync = false;
  save_safetensors(path, tensors, o);
}

std::set<std::string> differing(const DiffReport& r) {
  std::set<std::string> names;
  for (const auto& line : r.differences) names.insert(line.substr(0, line.find(':')));
  return names;
}

TEST(DiffIsclose, MatchesNumpyForEveryCaseAndDirection) {
  TempDir dir;
  const std::string expected = numpy_answers(dir);
  if (expected.empty()) GTEST_SKIP() << "no numpy in /usr/bin/python3";
  ASSERT_EQ(expected.size(), kTolerances.size() * kCases.size() * 2);
  write_side(dir / "a.safetensors", true);
  write_side(dir / "b.safetensors", false);
  size_t k = 0;
  for (const auto& t : kTolerances) {
    DiffOptions o;
    o.rtol = t.rtol;
    o.atol = t.atol;
    o.equal_nan = t.equal_nan;
    o.max_differences = kCases.size();
    const auto ab = differing(diff_checkpoints(dir / "a.safetensors", dir / "b.safetensors", o));
    const auto ba = differing(diff_checkpoints(dir / "b.safetensors", dir / "a.safetensors", o));
    for (size_t i = 0; i < kCases.size(); ++i, k += 2) {
      const std::string name = "c" + std::to_string(i);
      SCOPED_TRACE("a=" + repr(kCases[i].a) + " b=" + repr(kCases[i].b) + " rtol=" +
                   repr(t.rtol) + " atol=" + repr(t.atol) + (t.equal_nan ? " equal_nan" : ""));
      // The one documented exception: bit-identical elements (the NaN, NaN case) are equal.
      const bool same_bits = std::memcmp(&kCases[i].a, &kCases[i].b, sizeof(double)) == 0;
      EXPECT_EQ(ab.count(name) == 0, same_bits || expected[k] == '1') << "A vs B";
      EXPECT_EQ(ba.count(name) == 0, same_bits || expected[k + 1] == '1') << "B vs A";
    }
  }
}

TEST(DiffIsclose, NanDifferenceIsReportedAsNan) {
  TempDir dir;
  const double a[2] = {1, kNaN}, b[2] = {1, 2};
  SafetensorsWriteOptions o;
  o.sync = false;
  save_safetensors(dir / "a.safetensors", {{{"w", {DType::F64, {2}, std::as_bytes(std::span(a))}}}}, o);
  save_safetensors(dir / "b.safetensors", {{{"w", {DType::F64, {2}, std::as_bytes(std::span(b))}}}}, o);
  const DiffReport r = diff_checkpoints(dir / "a.safetensors", dir / "b.safetensors");
  ASSERT_EQ(r.difference_count, 1u);
  EXPECT_NE(r.differences[0].find("max abs diff nan"), std::string::npos) << r.differences[0];
}

}  // namespace
}  // namespace ckptio
