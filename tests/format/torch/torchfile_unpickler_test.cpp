// The restricted unpickler on hand-written opcode streams (no Python needed).
#include "format/torch/unpickler.h"

#include <gtest/gtest.h>

#include <cstring>

#include "ckptio/error.h"

namespace ckptio::pt {
namespace {

// Byte-string literals that may contain NUL.
std::string operator""_b(const char* s, size_t n) { return std::string(s, n); }

std::shared_ptr<TorchStorage> four_floats() {
  static const float data[4] = {0, 1, 2, 3};
  auto s = std::make_shared<TorchStorage>();
  s->key = "0";
  s->dtype = DType::F32;
  s->numel = 4;
  s->bytes = std::as_bytes(std::span(data));
  return s;
}

Value run(const std::string& pickle) {
  const auto storage = four_floats();
  const StorageResolver resolve = [&](const StorageRef& ref) -> std::shared_ptr<const TorchStorage> {
    if (ref.key != "0" || ref.numel != 4) throw Error(ErrorCode::Corrupt, "unknown storage");
    return storage;
  };
  return unpickle(std::as_bytes(std::span(pickle.data(), pickle.size())), 0, "test.pkl", resolve)
      .value;
}

ErrorCode error_of(const std::string& pickle, std::string* message = nullptr) {
  try {
    run(pickle);
  } catch (const Error& e) {
    if (message) *message = e.message();
    return e.code();
  }
  ADD_FAILURE() << "no error";
  return ErrorCode::Internal;
}

std::string unicode(const std::string& s) {  // SHORT_BINUNICODE
  return "\x8c" + std::string(1, static_cast<char>(s.size())) + s;
}

// ('storage', torch.FloatStorage, '0', 'cpu', 4) as BINPERSID, then
// _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()).
std::string tensor(const std::string& offset, const std::string& size, const std::string& stride) {
  return "ctorch._utils\n_rebuild_tensor_v2\n(" + std::string("(") + unicode("storage") +
         "ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") + "K\x04tQ" + offset + size +
         stride + "\x89" + "ccollections\nOrderedDict\n)Rtq\x00R"_b;
}

TEST(Unpickler, Scalars) {
  const Value v = run("\x80\x02(N\x88\x89K\x07M\x00\x01J\xff\xff\xff\xff\x8a\x01\xfe"_b +
                      "G\x3f\xf8\x00\x00\x00\x00\x00\x00"_b + unicode("h\xc3\xa9") + "C\x02\x00\x01t."_b);
  const auto& items = v.items();
  ASSERT_EQ(items.size(), 10u);
  EXPECT_TRUE(items[0].is_none());
  EXPECT_TRUE(items[1].as_bool());
  EXPECT_FALSE(items[2].as_bool());
  EXPECT_EQ(items[3].as_int(), 7);
  EXPECT_EQ(items[4].as_int(), 256);
  EXPECT_EQ(items[5].as_int(), -1);
  EXPECT_EQ(items[6].as_int(), -2);
  EXPECT_EQ(items[7].as_float(), 1.5);
  EXPECT_EQ(items[8].as_str(), "h\xc3\xa9");
  EXPECT_EQ(items[9].kind(), Value::Kind::Bytes);
  EXPECT_EQ(items[9].as_str(), "\x00\x01"_b);
}

TEST(Unpickler, LongsWiderThanEightBytesOnlyWhenSignExtension) {
  EXPECT_EQ(run("\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff."_b).as_int(), -1);
  EXPECT_EQ(error_of("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."_b),
            ErrorCode::Unsupported);
}

TEST(Unpickler, DictsKeepOrderAndLastValue) {
  const Value v = run("}(" + unicode("b") + "K\x01" + unicode("a") + "K\x02" + unicode("b") + "K\x03u.");
  const auto& d = v.dict_items();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].first.as_str(), "b");
  EXPECT_EQ(d[0].second.as_int(), 3);
  EXPECT_EQ(d[1].first.as_str(), "a");
}

TEST(Unpickler, MemoSharesObjects) {
  // [x, x] where x = [] is memoised; then x.append(1) through the memo is seen by both.
  const Value v = run("](]q\x01h\x01" "eh\x01K\x01" "a0.");
  // stack after: outer list; 'a' appended 1 to x (top was x), '0' popped x.
  ASSERT_EQ(v.items().size(), 2u);
  EXPECT_EQ(v.items()[0].items().size(), 1u);
  EXPECT_EQ(&v.items()[0].items(), &v.items()[1].items());
}

TEST(Unpickler, Tensors) {
  const Value v = run(tensor("K\x01", "K\x03\x85", "K\x01\x85") + ".");
  const TorchTensor& t = v.as_tensor();
  EXPECT_EQ(t.sizes, (Shape{3}));
  EXPECT_EQ(t.storage_offset, 1);
  float out[3];
  std::memcpy(out, t.contiguous().bytes().data(), sizeof out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[2], 3.0f);
  // Transposed 2x2 view: strides (1, 2).
  const TorchTensor tt = run(tensor("K\x00"_b, "K\x02K\x02\x86", "K\x01K\x02\x86") + ".").as_tensor();
  EXPECT_FALSE(tt.is_contiguous());
  std::memcpy(out, tt.contiguous().bytes().data(), sizeof(float) * 3);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 2.0f);
  EXPECT_EQ(out[2], 1.0f);
}

TEST(Unpickler, ViewBoundsChecked) {
  std::string message;
  EXPECT_EQ(error_of(tensor("K\x02", "K\x03\x85", "K\x01\x85") + ".", &message), ErrorCode::Corrupt);
  EXPECT_NE(message.find("reaches past"), std::string::npos) << message;
  EXPECT_EQ(error_of(tensor("K\x00"_b, "K\x02K\x02\x86", "K\x03K\x01\x86") + "."), ErrorCode::Corrupt);
  // A size past 2^63 (LONG1 of 9 bytes).
  EXPECT_EQ(error_of(tensor("K\x00"_b, std::string("\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x85", 11),
                            "K\x00\x85"_b) + "."),
            ErrorCode::Corrupt);
  // Zero-size tensors may sit at the very end of the storage, not past it.
  EXPECT_EQ(run(tensor("K\x04", "K\x00\x85"_b, "K\x01\x85") + ".").as_tensor().numel(), 0u);
  EXPECT_EQ(error_of(tensor("K\x05", "K\x00\x85"_b, "K\x01\x85") + "."), ErrorCode::Corrupt);
}

TEST(Unpickler, UnsafeGlobalsNamed) {
  std::string message;
  EXPECT_EQ(error_of("cos\nsystem\n" + unicode("id") + "\x85R.", &message), ErrorCode::Unsafe);
  EXPECT_NE(message.find("'os.system'"), std::string::npos) << message;
  EXPECT_EQ(error_of(unicode("builtins") + unicode("exec") + "\x93.", &message), ErrorCode::Unsafe);
  EXPECT_NE(message.find("'builtins.exec'"), std::string::npos);
  EXPECT_EQ(error_of("ctorch\nload\n."), ErrorCode::Unsafe);
  EXPECT_EQ(error_of("cnumpy.core.multiarray\n_reconstruct\n."), ErrorCode::Unsafe);
  EXPECT_EQ(error_of("csubprocess\nPopen\n."), ErrorCode::Unsafe);
  EXPECT_EQ(error_of("(" + unicode("x") + "ios\nsystem\n."), ErrorCode::Unsafe);      // INST
  EXPECT_EQ(error_of("(cos\nsystem\n" + unicode("x") + "o."), ErrorCode::Unsafe);     // OBJ (global first)
  EXPECT_EQ(error_of("\x82\x01."), ErrorCode::Unsafe);                                // EXT1
  // Calling something that is not a global, and NEWOBJ of a non-allowed class.
  EXPECT_EQ(error_of(")(tR."), ErrorCode::Unsafe);
  EXPECT_EQ(error_of("ctorch\nSize\n)\x81."), ErrorCode::Unsafe);
}

TEST(Unpickler, MalformedStreams) {
  EXPECT_EQ(error_of(""), ErrorCode::Corrupt);                     // no STOP
  EXPECT_EQ(error_of("0."), ErrorCode::Corrupt);                   // underflow
  EXPECT_EQ(error_of("(a."), ErrorCode::Corrupt);                  // underflow past a mark
  EXPECT_EQ(error_of("h\x05."), ErrorCode::Corrupt);               // memo never stored
  EXPECT_EQ(error_of("X\xff\xff\xff\x7f" "abc."), ErrorCode::Corrupt);  // length past the end
  EXPECT_EQ(error_of("\x8c\x02\xc3\x28."), ErrorCode::Corrupt);    // bad UTF-8
  EXPECT_EQ(error_of("\xff."), ErrorCode::Corrupt);                // unknown opcode
  EXPECT_EQ(error_of("NN."), ErrorCode::Corrupt);                  // two values at STOP
  EXPECT_EQ(error_of("\x80\x06N."), ErrorCode::Unsupported);       // protocol 6
  EXPECT_EQ(error_of("I1\n."), ErrorCode::Unsupported);            // text opcode
  EXPECT_EQ(error_of("}]K\x01s."), ErrorCode::Corrupt);            // unhashable key
  EXPECT_EQ(error_of("]q\x00h\x00"_b "a."), ErrorCode::Corrupt);     // list containing itself
  EXPECT_EQ(error_of(std::string(100000, ']') + std::string(99999, 'a') + "."), ErrorCode::Corrupt);
  EXPECT_EQ(error_of("\x95\xff\xff\xff\xff\xff\xff\xff\x7fN."), ErrorCode::Corrupt);  // FRAME
}

TEST(Unpickler, AllowedGlobalsBuildData) {
  // _codecs.encode('\xff\x00', 'latin1') -> b'\xff\x00'
  const Value b = run("c_codecs\nencode\n" + unicode("\xc3\xbf\x00"_b) + unicode("latin1") + "\x86R.");
  EXPECT_EQ(b.kind(), Value::Kind::Bytes);
  EXPECT_EQ(b.as_str(), "\xff\x00"_b);
  const Value size = run("ctorch\nSize\nK\x02K\x03\x86\x85R.");
  EXPECT_EQ(size.kind(), Value::Kind::Tuple);
  EXPECT_EQ(size.items()[1].as_int(), 3);
  EXPECT_EQ(run("ctorch\ndevice\n" + unicode("cuda") + "K\x01\x86R.").as_str(), "cuda:1");
  EXPECT_EQ(run("ctorch\nbfloat16\n.").as_str(), "torch.bfloat16");
  const Value set = run("\x8f(K\x01K\x02\x90.");
  EXPECT_EQ(set.items().size(), 2u);
  EXPECT_EQ(error_of("ctorch\nComplexDoubleStorage\n."), ErrorCode::Unsupported);
}

}  // namespace
}  // namespace ckptio::pt
