// `.metadata` parsing: real files written by torch.distributed.checkpoint (the fuzz seeds, saved by
// PyTorch 2.13 from two gloo ranks) and hand-written hostile pickles.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "ckptio/dcp.h"
#include "ckptio/error.h"
#include "format/torch/unpickler.h"

namespace ckptio::dcp {
namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
std::string seed(const char* name) {
  return read_file(std::filesystem::path(CKPTIO_SOURCE_DIR) / "tests/fuzz/corpus/dcp_metadata" / name);
}
DcpMetadata parse(const std::string& bytes) { return parse_dcp_metadata(std::as_bytes(std::span(bytes)), "m"); }

ErrorCode code_of(const std::string& bytes, std::string* message = nullptr) {
  try {
    parse(bytes);
  } catch (const Error& e) {
    if (message) *message = e.message();
    return e.code();
  }
  ADD_FAILURE() << "no error";
  return ErrorCode::Internal;
}

// A few pickle protocol-4 opcodes, enough to write metadata by hand.
struct Pickle {
  std::string b = "\x80\x04";
  Pickle& str(std::string_view s) {
    b += '\x8c';
    b += static_cast<char>(s.size());
    b += s;
    return *this;
  }
  Pickle& global(std::string_view module, std::string_view name) { return str(module).str(name).op('\x93'); }
  Pickle& op(char c) {
    b += c;
    return *this;
  }
  Pickle& object(std::string_view cls) {  // module.cls() with an empty __dict__ to be filled
    return global("torch.distributed.checkpoint.metadata", cls).op(')').op('\x81');
  }
  std::string done() { return b + "."; }
};

TEST(DcpMetadata, ReadsWhatPyTorchWrote) {
  const DcpMetadata m = parse(seed("blocks_and_values.metadata"));
  EXPECT_EQ(m.version, "1.0.0");
  ASSERT_EQ(m.tensors.size(), 5u);
  const DcpTensor& rows = m.tensors[0];
  EXPECT_EQ(rows.name, "model.rows");
  EXPECT_EQ(rows.dtype, DType::F32);
  EXPECT_EQ(rows.shape, (Shape{7, 3}));
  ASSERT_EQ(rows.chunks.size(), 2u);
  EXPECT_EQ(rows.chunks[1].offsets, (Shape{4, 0}));
  EXPECT_EQ(rows.chunks[1].sizes, (Shape{3, 3}));
  EXPECT_EQ(rows.chunks[1].item.file, "__1_0.distcp");
  EXPECT_EQ(m.tensors[1].dtype, DType::BF16);
  EXPECT_EQ(m.tensors[2].chunks.size(), 16u);  // 2x3 blocks of an 8x12 tensor
  EXPECT_EQ(m.tensors[4].shape, Shape{});      // 0-d
  ASSERT_EQ(m.bytes.size(), 4u);
  EXPECT_EQ(m.bytes[0].name, "step");
}

TEST(DcpMetadata, EmptyCheckpointByHand) {
  Pickle p;
  p.object("Metadata").op('}').op('(').str("state_dict_metadata").op('}').str("storage_data").op('}').op('u').op('b');
  const DcpMetadata m = parse(p.done());
  EXPECT_TRUE(m.tensors.empty());
  EXPECT_TRUE(m.bytes.empty());
}

TEST(DcpMetadata, GlobalsOutsideTheDcpListAreUnsafe) {
  for (auto [module, name] : {std::pair{"posix", "system"}, {"builtins", "eval"},
                              {"torch._utils", "_rebuild_tensor_v2"}, {"collections", "OrderedDict"},
                              {"torch", "FloatStorage"}}) {
    Pickle p;
    p.global(module, name).str("x").op('\x85').op('R');
    std::string msg;
    EXPECT_EQ(code_of(p.done(), &msg), ErrorCode::Unsafe) << module << "." << name;
    EXPECT_NE(msg.find(std::string(module) + "." + name), std::string::npos) << msg;
  }
}

TEST(DcpMetadata, TorchSaveAllowListRefusesDcpClasses) {
  Pickle p;
  p.object("Metadata");
  const std::string bytes = p.done();
  const pt::StorageResolver none = [](const pt::StorageRef&) -> std::shared_ptr<const pt::TorchStorage> {
    return nullptr;
  };
  try {
    pt::unpickle(std::as_bytes(std::span(bytes)), 0, "x.pt", none);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unsafe);
    EXPECT_NE(e.message().find("torch.distributed.checkpoint.metadata.Metadata"), std::string::npos);
  }
}

TEST(DcpMetadata, AClassCannotBeForgedOrChanged) {
  {  // a plain dict claiming to be Metadata
    Pickle p;
    p.op('}').op('(').str("__class__").str("Metadata").op('u');
    std::string msg;
    EXPECT_EQ(code_of(p.done(), &msg), ErrorCode::Corrupt);
    EXPECT_NE(msg.find("__class__"), std::string::npos) << msg;
  }
  {  // BUILD state renaming the object's class
    Pickle p;
    p.object("BytesStorageMetadata").op('}').op('(').str("__class__").str("Metadata").op('u').op('b');
    EXPECT_EQ(code_of(p.done()), ErrorCode::Corrupt);
  }
  {  // SETITEM on an object (Python would raise)
    Pickle p;
    p.object("Metadata").str("state_dict_metadata").op('}').op('s');
    std::string msg;
    EXPECT_EQ(code_of(p.done(), &msg), ErrorCode::Corrupt);
    EXPECT_NE(msg.find("SETITEM on an object"), std::string::npos) << msg;
  }
}

TEST(DcpMetadata, WrongStructureIsCorrupt) {
  {  // the root is not Metadata
    Pickle p;
    p.object("StorageMeta").op('}').op('b');
    EXPECT_EQ(code_of(p.done()), ErrorCode::Corrupt);
  }
  {  // a tensor entry that is a str
    Pickle p;
    p.object("Metadata").op('}').op('(').str("state_dict_metadata").op('}').str("w").str("x").op('s').op('u').op('b');
    EXPECT_EQ(code_of(p.done()), ErrorCode::Corrupt);
  }
  {  // bytes after STOP
    EXPECT_EQ(code_of(seed("two_ranks.metadata") + "x"), ErrorCode::Corrupt);
  }
}

TEST(DcpMetadata, EveryTruncationFailsWithATypedError) {
  const std::string full = seed("two_ranks.metadata");
  for (size_t n = 0; n < full.size(); ++n) {
    try {
      parse(full.substr(0, n));
      ADD_FAILURE() << "a prefix of " << n << " bytes parsed";
    } catch (const Error& e) {
      EXPECT_NE(e.code(), ErrorCode::Internal) << e.what();
    }
  }
}

TEST(DcpMetadata, BitFlipsFailWithATypedErrorOrParse) {
  const std::string full = seed("two_ranks.metadata");
  for (size_t i = 0; i < full.size(); i += 3) {
    std::string s = full;
    s[i] = static_cast<char>(s[i] ^ (1 << (i % 8)));
    try {
      parse(s);
    } catch (const Error& e) {
      EXPECT_NE(e.code(), ErrorCode::Internal) << "flip at " << i << ": " << e.what();
    }
  }
}

}  // namespace
}  // namespace ckptio::dcp
