// Files we write, read by an independent reader: the system Python parses the header with its
// own JSON parser, checks the layout rules, and decodes the data with PyTorch, comparing against
// tensors PyTorch computes itself.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ckptio/safetensors.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::python_has_torch;
using testing::run_python;
using testing::TempDir;

template <typename T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span(v));
}

constexpr const char* kCheck = R"py(
import json, struct, sys, torch
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
assert n % 8 == 0, n
text = raw[8:8 + n].decode('utf-8')
assert text.rstrip(' ').endswith('}') and len(text) - len(text.rstrip(' ')) < 8, repr(text[-10:])
pairs = json.loads(text, object_pairs_hook=lambda p: p)
keys = [k for k, _ in pairs]
assert keys[0] == '__metadata__', keys
assert dict(dict(pairs)['__metadata__']) == {'format': 'pt'}, pairs[0]
entries = [(k, dict(v)) for k, v in pairs[1:]]
for k, e in entries:
    assert list(e.keys()) == ['dtype', 'shape', 'data_offsets'], e
offsets = [tuple(e['data_offsets']) for _, e in entries]
assert offsets == sorted(offsets) and offsets[0][0] == 0, offsets
assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:])), offsets
assert 8 + n + offsets[-1][1] == len(raw)
data = bytearray(raw[8 + n:])
dt = {'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
      'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
      'U8': torch.uint8, 'BOOL': torch.bool}
got = {}
for k, e in entries:
    b, end = e['data_offsets']
    got[k] = torch.frombuffer(data[b:end], dtype=dt[e['dtype']]).reshape(e['shape']) if end > b \
        else torch.empty(e['shape'], dtype=dt[e['dtype']])
want = {
    'f64': torch.arange(6, dtype=torch.float64).reshape(2, 3) / 3,
    'f32': torch.arange(12, dtype=torch.float32).reshape(3, 4) - 5.5,
    'f16': torch.tensor([1.0, -2.5, 65504.0, 6.1035e-05], dtype=torch.float16),
    'bf16': torch.tensor([[1.0, -3.0e38], [1e-38, 0.5]], dtype=torch.bfloat16),
    'i64': torch.tensor([-(2**62), 2**62, -1], dtype=torch.int64),
    'i32': torch.tensor(-123456, dtype=torch.int32),
    'u8': torch.arange(250, 256, dtype=torch.int64).to(torch.uint8),
    'bool': torch.tensor([True, False, True]),
    'empty': torch.empty((0, 3), dtype=torch.float32),
}
assert set(got) == set(want), (sorted(got), sorted(want))
for k in want:
    assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, (k, got[k], want[k])
    assert torch.equal(got[k], want[k]), (k, got[k], want[k])
order = [k for k, _ in entries]
assert order == ['i64', 'f64', 'f32', 'i32', 'bf16', 'f16', 'u8', 'bool'] or \
       order == ['i64', 'f64', 'empty', 'f32', 'i32', 'bf16', 'f16', 'u8', 'bool'] or \
       order == ['i64', 'f64', 'f32', 'empty', 'i32', 'bf16', 'f16', 'u8', 'bool'], order
print('torch read', len(entries), 'tensors')
)py";

TEST(SafetensorsTorchInterop, PyTorchDecodesWhatWeWrite) {
  if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
  TempDir dir;
  std::vector<double> f64;
  for (int i = 0; i < 6; ++i) f64.push_back(i / 3.0);
  std::vector<float> f32;
  for (int i = 0; i < 12; ++i) f32.push_back(static_cast<float>(i) - 5.5f);
  std::vector<uint16_t> f16;
  for (float v : {1.0f, -2.5f, 65504.0f, 6.1035e-05f}) f16.push_back(f32_to_f16(v));
  std::vector<uint16_t> bf16;
  for (float v : {1.0f, -3.0e38f, 1e-38f, 0.5f}) bf16.push_back(f32_to_bf16(v));
  const std::vector<int64_t> i64 = {-(int64_t{1} << 62), int64_t{1} << 62, -1};
  const std::vector<int32_t> i32 = {-123456};
  const std::vector<uint8_t> u8 = {250, 251, 252, 253, 254, 255};
  const std::vector<uint8_t> boolean = {1, 0, 1};
  const std::vector<NamedTensor> tensors = {
      {"f64", {DType::F64, {2, 3}, bytes_of(f64)}},   {"f32", {DType::F32, {3, 4}, bytes_of(f32)}},
      {"f16", {DType::F16, {4}, bytes_of(f16)}},      {"bf16", {DType::BF16, {2, 2}, bytes_of(bf16)}},
      {"i64", {DType::I64, {3}, bytes_of(i64)}},      {"i32", {DType::I32, {}, bytes_of(i32)}},
      {"u8", {DType::U8, {6}, bytes_of(u8)}},         {"bool", {DType::BOOL, {3}, bytes_of(boolean)}},
      {"empty", {DType::F32, {0, 3}, {}}},
  };
  save_safetensors(dir / "t.safetensors", tensors);
  EXPECT_EQ(run_python(dir.path(), kCheck, (dir / "t.safetensors").string()), 0);
}

}  // namespace
}  // namespace ckptio
