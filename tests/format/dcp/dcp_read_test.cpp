// Reading tensors of a DCP folder that torch.distributed.checkpoint.save wrote at test time (one
// gloo rank, a BF16 tensor saved as four uneven boxes, plain F16 and F64 tensors): boxes straight
// into caller memory, converted chunk by chunk, must hold exactly what assembling the tensor and
// converting it afterwards gives. Runs the project's Python (.venv, with torch); skipped without it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "ckptio/dcp.h"
#include "ckptio/error.h"
#include "ckptio/load.h"
#include "load/converted_reads.h"
#include "support/expect_error.h"
#include "support/test_util.h"

namespace ckptio::dcp {
namespace {

namespace fs = std::filesystem;

const fs::path kPython = fs::path(CKPTIO_SOURCE_DIR) / ".venv" / "bin" / "python";

constexpr const char* kScript = R"PY(
import os
import sys
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard.sharded_tensor import Shard, ShardMetadata, init_from_local_shards

out = sys.argv[1]
dist.init_process_group("gloo", init_method="file://" + out + ".rendezvous", rank=0, world_size=1)
g = torch.Generator().manual_seed(7)
w = (torch.randn(6, 10, generator=g) * 3).to(torch.bfloat16)
boxes = [(0, 0, 4, 3), (0, 3, 4, 7), (4, 0, 2, 3), (4, 3, 2, 7)]
shards = [Shard(w[r:r + h, c:c + n].contiguous(), ShardMetadata([r, c], [h, n], "rank:0/cpu"))
          for r, c, h, n in boxes]
state = {"w": init_from_local_shards(shards, [6, 10]),
         "h": torch.randn(5, 3, generator=g).to(torch.float16),
         "d": torch.randn(4, generator=g, dtype=torch.float64) * 1e-30,
         "step": 3}
dcp.save(state, checkpoint_id=out)
# The files are complete and closed; leave without the process group's teardown, which aborted
# ("terminate called without an active exception") once in a loaded CI run.
sys.stdout.flush()
os._exit(0)
)PY";

bool python_has_dcp() {
  static const bool ok =
      fs::exists(kPython) &&
      std::system((kPython.string() + " -c 'import torch.distributed.checkpoint' >/dev/null 2>&1").c_str()) == 0;
  return ok;
}

// The folder, written once for all tests of this file.
const fs::path& saved() {
  static const ckptio::testing::TempDir tmp;  // removed at exit
  static const fs::path dir = [] {
    const fs::path out = tmp / "ckpt";
    const fs::path script = tmp / "save_dcp.py";
    ckptio::testing::write_file(script, kScript);
    const std::string cmd = kPython.string() + " " + script.string() + " " + out.string();
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return out;
  }();
  return dir;
}

// `t`'s elements converted to `to` after the fact: what the direct reads must equal.
std::vector<std::byte> converted(const Tensor& t, DType to) {
  return testing::converted(t.dtype(), t.bytes(), to, shape_numel(t.shape()));
}

std::vector<std::byte> bytes_of(const Tensor& t) { return {t.bytes().begin(), t.bytes().end()}; }

class DcpRead : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!python_has_dcp()) GTEST_SKIP() << "no " << kPython << " with torch.distributed.checkpoint";
  }
};

// (Each test writes the fixture again: ctest runs every test in its own process.)
TEST_F(DcpRead, BoxesIntoCallerMemoryEqualReadBoxConvertedAfterwards) {
  const DcpReader reader = DcpReader::open(saved());
  ASSERT_EQ(reader.tensor("w").dtype, DType::BF16);
  ASSERT_EQ(reader.tensor("w").chunks.size(), 4u);
  {
    SCOPED_TRACE("the stored dtype, a box across all four chunks");
    const Shape offsets{1, 2}, sizes{4, 6};
    const Tensor box = reader.read_box("w", offsets, sizes);
    std::vector<std::byte> dst(box.nbytes());
    reader.read_box_into("w", offsets, sizes, DType::BF16, dst);
    EXPECT_EQ(dst, bytes_of(box));
  }
  for (DType to : {DType::F32, DType::F64, DType::F16, DType::F8_E4M3}) {
    SCOPED_TRACE(dtype_name(to));
    const Shape offsets{3, 1}, sizes{3, 8};
    std::vector<std::byte> dst(tensor_nbytes(to, sizes), std::byte{0xAB});
    reader.read_box_into("w", offsets, sizes, to, dst);
    EXPECT_EQ(dst, converted(reader.read_box("w", offsets, sizes), to));
  }
  std::vector<std::byte> dst(60 * 2);  // BF16 bytes, F32 asked
  testing::expect_error([&] { reader.read_box_into("w", {0, 0}, {6, 10}, DType::F32, dst); },
                        ErrorCode::InvalidArgument);
  std::vector<std::byte> ints(60 * 4);
  testing::expect_error([&] { reader.read_box_into("w", {0, 0}, {6, 10}, DType::I32, ints); },
                        ErrorCode::Mismatch);
  std::vector<std::byte> one(2);  // a box outside the tensor
  testing::expect_error([&] { reader.read_box_into("w", {6, 0}, {1, 1}, DType::BF16, one); },
                        ErrorCode::InvalidArgument);
}

// The load path (load_checkpoint, convert) reads DCP tensors through CheckpointReader.
TEST_F(DcpRead, CheckpointReaderLoadsIntoAnotherDtypeAsConvertingAfterAPlainLoad) {
  const CheckpointReader reader = CheckpointReader::open(saved());
  ASSERT_EQ(reader.source().kind, SourceKind::DcpFolder);
  testing::expect_converting_reads_match_plain_loads(
      reader, {{"w", DType::F32}, {"w", DType::BF16}, {"h", DType::F64}, {"h", DType::BF16},
               {"d", DType::F32}, {"d", DType::F16}});
  // A bad request anywhere is refused before any byte is read.
  std::vector<std::byte> good(tensor_nbytes(DType::F32, Shape{6, 10}), std::byte{0xAB});
  std::vector<std::byte> bad(3);
  const std::vector<ReadRequest> requests{{"w", DType::F32, good}, {"h", DType::F32, bad}};
  testing::expect_error([&] { reader.read_into_many(requests); }, ErrorCode::InvalidArgument);
  EXPECT_TRUE(std::all_of(good.begin(), good.end(), [](std::byte b) { return b == std::byte{0xAB}; }));
}

}  // namespace
}  // namespace ckptio::dcp
