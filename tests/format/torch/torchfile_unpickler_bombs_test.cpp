// Small pickles that describe huge work through sharing (memo references, REDUCE on a shared
// argument): each fails with a typed error after a counted budget is hit, instead of ending the
// process by a signal or taking memory and time far beyond its size. The shapes that would
// allocate gigabytes without the budgets run in a child process under RLIMIT_AS, so a regression
// shows as a failed test, not as a machine out of memory.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <new>
#include <vector>

#include "ckptio/error.h"
#include "format/torch/unpickler.h"

namespace ckptio::pt {
namespace {

std::string operator""_b(const char* s, size_t n) { return std::string(s, n); }

std::string le32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
std::string put(uint32_t n) { return "r" + le32(n); }  // LONG_BINPUT
std::string get(uint32_t n) { return "j" + le32(n); }  // LONG_BINGET
std::string unicode(const std::string& s) { return "\x8c" + std::string(1, static_cast<char>(s.size())) + s; }

// One zero-filled float storage of `numel` elements under key "0".
struct Storage {
  explicit Storage(uint64_t numel) : data(numel) {
    storage->key = "0";
    storage->dtype = DType::F32;
    storage->numel = numel;
    storage->bytes = std::as_bytes(std::span(data));
  }
  std::vector<float> data;
  std::shared_ptr<TorchStorage> storage = std::make_shared<TorchStorage>();
};

Value run(const std::string& pickle, uint64_t storage_numel = 4) {
  const Storage s(storage_numel);
  const StorageResolver resolve = [&](const StorageRef&) -> std::shared_ptr<const TorchStorage> {
    return s.storage;
  };
  return unpickle(std::as_bytes(std::span(pickle.data(), pickle.size())), 0, "bomb.pkl", resolve).value;
}

struct Outcome {
  ErrorCode code = ErrorCode::Internal;
  std::string message;
};

Outcome error_of(const std::string& pickle, uint64_t storage_numel = 4) {
  try {
    run(pickle, storage_numel);
  } catch (const Error& e) {
    return {e.code(), e.message()};
  }
  ADD_FAILURE() << "no error";
  return {};
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

uint64_t mapped_bytes_now() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;  // kB
  }
  return 0;
}

// Runs `fn` in a child whose address space may grow by at most 2 GiB (not capped under ASan,
// whose shadow memory does not fit such a cap). Returns "ok", "bad_alloc", or "<code>: <message>".
std::string in_capped_child(const std::function<void()>& fn) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  const uint64_t cap = mapped_bytes_now() + (uint64_t{2} << 30);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    if (!kAddressSanitizer) {
      const rlimit limit{cap, cap};
      setrlimit(RLIMIT_AS, &limit);
    }
    std::string result;
    try {
      fn();
      result = "ok";
    } catch (const Error& e) {
      result = std::string(error_code_name(e.code())) + ": " + e.message();
    } catch (const std::bad_alloc&) {
      result = "bad_alloc";
    }
    (void)!write(fds[1], result.data(), result.size());
    _exit(0);
  }
  close(fds[1]);
  std::string result;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) result.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return result;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// (chain_1, ..., chain_n): chain_1 is `levels` one-tuples around (), each next chain is `levels`
// one-tuples around the memoised previous one. Every chain alone is shallow; the last is
// n * levels high.
std::string memo_chains(int chains, int levels) {
  std::string p = "\x80\x02(";
  for (int c = 0; c < chains; ++c) {
    p += c == 0 ? ")" : get(static_cast<uint32_t>(c - 1));
    p += std::string(static_cast<size_t>(levels), '\x85');  // TUPLE1
    p += put(static_cast<uint32_t>(c));
  }
  return p + "t.";
}

TEST(UnpicklerBombs, SharedSubtreesCountTowardsTheHeight) {
  // Two chains of 300: each fits the 512 limit on its own, the second holds the first.
  const Outcome o = error_of(memo_chains(2, 300));
  EXPECT_EQ(o.code, ErrorCode::Corrupt) << o.message;
  EXPECT_NE(o.message.find("nested deeper than 512"), std::string::npos) << o.message;
  // One chain of 300 is fine.
  EXPECT_EQ(run(memo_chains(1, 300)).items().size(), 1u);
}

TEST(UnpicklerBombs, TwoHundredThousandLevelsFromMemoChainsFailWithoutCrashing) {
  // The reported shape: ~200 KB of pickle, a 200,000-level tree.
  const std::string p = memo_chains(400, 500);
  EXPECT_LT(p.size(), 210000u);
  const Outcome o = error_of(p);
  EXPECT_EQ(o.code, ErrorCode::Corrupt) << o.message;
  EXPECT_NE(o.message.find("nested deeper"), std::string::npos) << o.message;
}

TEST(UnpicklerBombs, ExponentialSharingOfDictsIsRefused) {
  // d = {}; 40 times: d = {'a': d, 'b': d}. 2^41 nodes once walked; a few hundred bytes.
  std::string p = "\x80\x02}" + put(0);
  for (uint32_t i = 1; i <= 40; ++i) {
    p += "0}(" + unicode("a") + get(i - 1) + unicode("b") + get(i - 1) + "u" + put(i);
  }
  p += ".";
  EXPECT_LT(p.size(), 1200u);
  const Outcome o = error_of(p);
  EXPECT_EQ(o.code, ErrorCode::Unsafe) << o.message;
  EXPECT_NE(o.message.find("expands to more than 1048576 nodes"), std::string::npos) << o.message;
  // 10 levels (2^11 nodes) load, sharing intact.
  std::string small = "\x80\x02}" + put(0);
  for (uint32_t i = 1; i <= 10; ++i) {
    small += "0}(" + unicode("a") + get(i - 1) + unicode("b") + get(i - 1) + "u" + put(i);
  }
  const Value v = run(small + ".");
  EXPECT_EQ(&v.find("a")->dict_items(), &v.find("b")->dict_items());
}

// [bytearray(blob) for 3000 times], `keep`: the results stay in the list, else each is popped
// (the last one kept).
std::string bytearray_reduces(bool keep) {
  std::string p = "\x80\x04]" + unicode("builtins") + unicode("bytearray") + "\x93" + put(0) + "0";
  p += "B" + le32(1 << 20) + std::string(1 << 20, 'x') + "\x85" + put(1) + "0";
  for (int i = 0; i < 3000; ++i) p += get(0) + get(1) + "R" + (keep || i == 2999 ? "a" : "0");
  return p + ".";
}

TEST(UnpicklerBombs, ReducesOnOneBlobShareItsBytes) {
  // 3000 bytearray(blob) calls of 11 bytes each on a 1 MiB blob: 3 GiB if each copied.
  const std::string p = bytearray_reduces(false);
  std::string result = in_capped_child([&] {
    const Value v = run(p);
    if (v.items().size() != 1 || v.items()[0].as_str().size() != (1u << 20)) {
      throw Error(ErrorCode::Internal, "wrong value");
    }
  });
  EXPECT_EQ(result, "ok");
  // Kept, they would expand to 3 GiB when walked: refused by the byte budget.
  const std::string kept = bytearray_reduces(true);
  result = in_capped_child([&] { run(kept); });
  EXPECT_TRUE(starts_with(result, "unsafe: ")) << result;
  EXPECT_NE(result.find("bytes of strings, names and tensor views"), std::string::npos) << result;
}

TEST(UnpicklerBombs, OrderedDictOfASharedDictIsChargedPerCopy) {
  // src = {0: 0, ..., 99999: 0}; then OrderedDict(src) 3000 times (12 bytes each).
  std::string p = "\x80\x02}" + put(0) + "(";
  for (uint32_t i = 0; i < 100000; ++i) p += "J" + le32(i) + "K\x00"_b;
  p += "u0ccollections\nOrderedDict\n" + put(1) + "0" + get(0) + "\x85" + put(2) + "0N";
  for (int i = 0; i < 3000; ++i) p += get(1) + get(2) + "R0";
  p += ".";
  const std::string result = in_capped_child([&] { run(p); });
  EXPECT_TRUE(starts_with(result, "unsafe: ")) << result;
  EXPECT_NE(result.find("OrderedDict: rebuilding objects would copy more than"), std::string::npos)
      << result;
}

TEST(UnpicklerBombs, SetOfASharedListIsChargedPerCopy) {
  // l = [0] * 100000; then set(l) 10000 times (12 bytes each): 4 GB of item copies.
  std::string p = "\x80\x02]" + put(0) + "(";
  for (int i = 0; i < 100000; ++i) p += "K\x00"_b;
  p += "e0c__builtin__\nset\n" + put(1) + "0" + get(0) + "\x85" + put(2) + "0N";
  for (int i = 0; i < 10000; ++i) p += get(1) + get(2) + "R0";
  p += ".";
  const std::string result = in_capped_child([&] { run(p); });
  EXPECT_TRUE(starts_with(result, "unsafe: ")) << result;
  EXPECT_NE(result.find("set: rebuilding objects would copy more than"), std::string::npos) << result;
}

TEST(UnpicklerBombs, ExponentialTupleKeyIsChargedWhileHashed) {
  // k = (); 31 times: k = (k, k); {k: None}. Hashing the key would write 2^32 bytes.
  std::string p = "\x80\x02)" + put(0) + "0";
  for (uint32_t i = 1; i <= 31; ++i) p += get(i - 1) + get(i - 1) + "\x86" + put(i) + "0";
  p += "}" + get(31) + "Ns.";
  const std::string result = in_capped_child([&] { run(p); });
  EXPECT_TRUE(starts_with(result, "unsafe: ")) << result;
  EXPECT_NE(result.find("dict key: rebuilding objects would copy more than"), std::string::npos)
      << result;
}

TEST(UnpicklerBombs, ManyViewsOfOneStorageCountEveryView) {
  // 1000 transposed 1000x1000 views of one 4 MB storage: 4 GB once made contiguous. None is
  // larger than the storage, so only counting every view catches it.
  std::string p = "\x80\x02](";
  for (int i = 0; i < 1000; ++i) {
    p += "ctorch._utils\n_rebuild_tensor_v2\n((" + unicode("storage") + "ctorch\nFloatStorage\n" +
         unicode("0") + unicode("cpu") + "J\x40\x42\x0f\x00tQK\x00(M\xe8\x03M\xe8\x03t(K\x01M\xe8\x03t"_b +
         "\x89" + "ccollections\nOrderedDict\n)RtR";
  }
  p += "e.";
  const Outcome o = error_of(p, 1000000);
  EXPECT_EQ(o.code, ErrorCode::Unsafe) << o.message;
  EXPECT_NE(o.message.find("bytes of strings, names and tensor views"), std::string::npos) << o.message;
  // 50 such views (200 MB) stay under the 256 MiB default.
  std::string fifty = "\x80\x02](";
  for (int i = 0; i < 50; ++i) {
    fifty += "ctorch._utils\n_rebuild_tensor_v2\n((" + unicode("storage") + "ctorch\nFloatStorage\n" +
             unicode("0") + unicode("cpu") + "J\x40\x42\x0f\x00tQK\x00(M\xe8\x03M\xe8\x03t(K\x01M\xe8\x03t"_b +
             "\x89" + "ccollections\nOrderedDict\n)RtR";
  }
  EXPECT_EQ(run(fifty + "e.", 1000000).items().size(), 50u);
}

TEST(UnpicklerBombs, RebuildFromTypeCannotNestItself) {
  // l = [_rebuild_from_type_v2, torch.Tensor, l, None]; _rebuild_from_type_v2(*l) would recurse
  // through l forever.
  const std::string p = "\x80\x02]" + put(0) + "(ctorch._tensor\n_rebuild_from_type_v2\nctorch\nTensor\n" +
                        get(0) + "Ne" + "ctorch._tensor\n_rebuild_from_type_v2\n" + get(0) + "R.";
  const Outcome o = error_of(p);
  EXPECT_EQ(o.code, ErrorCode::Corrupt) << o.message;
  EXPECT_NE(o.message.find("_rebuild_from_type_v2 of _rebuild_from_type_v2"), std::string::npos) << o.message;
}

TEST(UnpicklerBombs, WalkersRefuseTreesBuiltHigherThanTheyAccept) {
  // Only a tree built by hand can be this high; the recursive walkers refuse it with an error.
  Value v = Value::integer(1);
  for (int i = 0; i < kMaxTreeHeight + 10; ++i) v = Value::list({v});
  try {
    flatten(v);
    ADD_FAILURE() << "flatten walked it";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.message();
  }
  try {
    value_to_json(v);
    ADD_FAILURE() << "value_to_json walked it";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.message();
  }
  // Asking the unpickler for more than that still gets no higher tree.
  UnpickleOptions options;
  options.max_depth = 1 << 30;
  const std::string p = memo_chains(10, 500);
  const StorageResolver none = [](const StorageRef&) -> std::shared_ptr<const TorchStorage> { return nullptr; };
  try {
    unpickle(std::as_bytes(std::span(p.data(), p.size())), 0, "deep.pkl", none, options);
    ADD_FAILURE() << "a 5000-level tree loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Corrupt) << e.message();
  }
}

}  // namespace
}  // namespace ckptio::pt
