// The opcode machine: reads the pickle, keeps the stack and the memo, and hands objects to the
// arena (pickle_objects.h) and globals, calls and storage references to the allow-list
// (allow_list.h). Every object is created by an opcode that consumed at least one byte, so the
// arena is bounded by the pickle's length. After STOP the reachable graph is turned into the
// immutable Value tree, sharing preserved and cycles refused; converting counts the height and the
// expanded size of every subtree once (memoised), so a tree that would blow up when walked with
// its sharing undone is refused before anyone walks it.
#include "format/torch/unpickler.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <unordered_map>

#include "ckptio/error.h"
#include "format/torch/allow_list.h"

namespace ckptio::pt {

namespace {

using pickle::DictObj;
using pickle::G;
using pickle::K;
using pickle::Obj;
using pickle::torch_dtype_name;

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}
class Unpickler : private pickle::ObjectBuilder {
 public:
  Unpickler(std::span<const std::byte> data, size_t start, std::string_view source,
            const StorageResolver& resolve, const UnpickleOptions& options)
      : ObjectBuilder(source, data.size(), resolve, options), data_(data), pos_(start) {}

  UnpickleResult run() {
    while (true) {
      op_pos_ = pos_;
      const uint8_t op = u8();
      if (step(op)) break;
    }
    if (stack_.size() != 1 || !marks_.empty()) {
      fail(ErrorCode::Corrupt, "STOP with " + std::to_string(stack_.size()) +
                                   " values on the stack (expected exactly 1)");
    }
    const uint32_t root = stack_.back();
    converted_.assign(objs_.size(), Value());
    state_.assign(objs_.size(), 0);
    expansion_.assign(objs_.size(), Expansion{});
    return UnpickleResult{convert(root, 0), pos_};
  }

 private:

  // --- input ---
  void need(uint64_t n) const {
    if (n > data_.size() - pos_) fail(ErrorCode::Corrupt, "pickle truncated (opcode needs " +
                                                           std::to_string(n) + " more bytes)");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t le(int n) {
    need(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += static_cast<size_t>(n);
    return v;
  }
  std::string_view take(uint64_t n) {
    need(n);
    std::string_view s(reinterpret_cast<const char*>(data_.data()) + pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  std::string_view line() {
    const size_t start = pos_;
    while (true) {
      if (pos_ >= data_.size()) fail(ErrorCode::Corrupt, "pickle truncated inside a GLOBAL name");
      if (data_[pos_++] == std::byte{'\n'}) break;
    }
    return {reinterpret_cast<const char*>(data_.data()) + start, pos_ - start - 1};
  }
  // --- stack ---
  void push(uint32_t i) { stack_.push_back(i); }
  uint32_t pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) {
      fail(ErrorCode::Corrupt, "stack underflow");
    }
    const uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t& top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) {
      fail(ErrorCode::Corrupt, "stack underflow");
    }
    return stack_.back();
  }
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail(ErrorCode::Corrupt, "no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  void memo_put(uint64_t index) {
    if (index > 0xffffffffu) fail(ErrorCode::Corrupt, "memo index out of range");
    memo_[static_cast<uint32_t>(index)] = top();
  }
  void memo_get(uint64_t index) {
    const auto it = memo_.find(static_cast<uint32_t>(index));
    if (index > 0xffffffffu || it == memo_.end()) {
      fail(ErrorCode::Corrupt, "memo index " + std::to_string(index) + " was never stored");
    }
    push(it->second);
  }

  int64_t decode_long(std::string_view bytes) {
    if (bytes.empty()) return 0;
    if (bytes.size() > 8) {
      // Wider encodings are fine when the extra bytes are only sign extension.
      const uint8_t fill = (static_cast<uint8_t>(bytes[7]) & 0x80) ? 0xff : 0x00;
      for (size_t i = 8; i < bytes.size(); ++i) {
        if (static_cast<uint8_t>(bytes[i]) != fill) {
          fail(ErrorCode::Unsupported, "integer wider than 64 bits");
        }
      }
      bytes = bytes.substr(0, 8);
    }
    uint64_t v = 0;
    for (size_t i = bytes.size(); i-- > 0;) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
    const size_t bits = bytes.size() * 8;
    if (bits < 64 && (v >> (bits - 1)) & 1) v |= ~uint64_t{0} << bits;  // sign-extend
    return static_cast<int64_t>(v);
  }

  uint32_t unicode(std::string_view s) {
    if (!valid_utf8(s)) fail(ErrorCode::Corrupt, "string is not valid UTF-8");
    return make_string(K::Str, std::string(s));
  }
  // Returns true on STOP.
  bool step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t v = u8();
        if (v > 5) fail(ErrorCode::Unsupported, "pickle protocol " + std::to_string(v));
        return false;
      }
      case 0x95: {  // FRAME: framing is a read-ahead hint; the length must still fit
        const uint64_t n = le(8);
        if (n > data_.size() - pos_) fail(ErrorCode::Corrupt, "FRAME longer than the pickle");
        return false;
      }
      case '.': return true;  // STOP
      case '(': marks_.push_back(stack_.size()); return false;
      case '0': pop(); return false;
      case '1': pop_mark(); return false;
      case '2': push(top()); return false;
      case 'N': push(make_scalar(K::None)); return false;
      case 0x88: push(make(Obj{K::Bool, true})); return false;
      case 0x89: push(make(Obj{K::Bool, false})); return false;
      case 'J': push(make_int(static_cast<int32_t>(static_cast<uint32_t>(le(4))))); return false;
      case 'K': push(make_int(static_cast<int64_t>(le(1)))); return false;
      case 'M': push(make_int(static_cast<int64_t>(le(2)))); return false;
      case 0x8a: {  // LONG1
        const uint64_t n = le(1);
        push(make_int(decode_long(take(n))));
        return false;
      }
      case 0x8b: {  // LONG4
        const uint64_t n = le(4);
        if (n > 0x7fffffffu) fail(ErrorCode::Corrupt, "negative LONG4 length");
        push(make_int(decode_long(take(n))));
        return false;
      }
      case 'G': {  // BINFLOAT, big-endian IEEE double
        uint64_t bits = 0;
        for (const char ch : take(8)) bits = (bits << 8) | static_cast<uint8_t>(ch);
        push(make(Obj{K::Float, false, 0, std::bit_cast<double>(bits)}));
        return false;
      }
      case 'X': push(unicode(take(le(4)))); return false;     // BINUNICODE
      case 0x8c: push(unicode(take(le(1)))); return false;    // SHORT_BINUNICODE
      case 0x8d: push(unicode(take(le(8)))); return false;    // BINUNICODE8
      case 'T':                                               // BINSTRING (Python 2 str)
      case 'U': {                                             // SHORT_BINSTRING
        const std::string_view s = take(le(op == 'T' ? 4 : 1));
        push(make_string(valid_utf8(s) ? K::Str : K::Bytes, std::string(s)));
        return false;
      }
      case 'B': push(make_string(K::Bytes, std::string(take(le(4))))); return false;
      case 'C': push(make_string(K::Bytes, std::string(take(le(1))))); return false;
      case 0x8e: push(make_string(K::Bytes, std::string(take(le(8))))); return false;
      case 0x96: push(make_string(K::Bytes, std::string(take(le(8))))); return false;  // BYTEARRAY8
      case ']': push(make_seq(K::List, {})); return false;
      case ')': push(make_seq(K::Tuple, {})); return false;
      case '}': push(make_dict()); return false;
      case 0x8f: push(make_seq(K::Set, {})); return false;  // EMPTY_SET
      case 'l': push(make_seq(K::List, pop_mark())); return false;
      case 't': push(make_seq(K::Tuple, pop_mark())); return false;
      case 0x91: push(make_seq(K::Set, pop_mark())); return false;  // FROZENSET
      case 0x85: {
        const uint32_t a = pop();
        push(make_seq(K::Tuple, {a}));
        return false;
      }
      case 0x86: {
        const uint32_t b = pop(), a = pop();
        push(make_seq(K::Tuple, {a, b}));
        return false;
      }
      case 0x87: {
        const uint32_t c = pop(), b = pop(), a = pop();
        push(make_seq(K::Tuple, {a, b, c}));
        return false;
      }
      case 'd': {  // DICT
        const auto items = pop_mark();
        const uint32_t d = make_dict();
        if (items.size() % 2) fail(ErrorCode::Corrupt, "DICT with an odd number of items");
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
        push(d);
        return false;
      }
      case 'a': {
        const uint32_t v = pop();
        append(top(), v);
        return false;
      }
      case 'e': {  // APPENDS
        const auto items = pop_mark();
        const uint32_t list = top();
        for (uint32_t v : items) append(list, v);
        return false;
      }
      case 0x90: {  // ADDITEMS
        const auto items = pop_mark();
        const uint32_t set = top();
        if (obj(set).kind != K::Set) fail(ErrorCode::Corrupt, "ADDITEMS on a non-set");
        for (uint32_t v : items) append(set, v);
        return false;
      }
      case 's': {
        const uint32_t v = pop(), k = pop();
        set_item(top(), k, v);
        return false;
      }
      case 'u': {  // SETITEMS
        const auto items = pop_mark();
        if (items.size() % 2) fail(ErrorCode::Corrupt, "SETITEMS with an odd number of items");
        const uint32_t d = top();
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
        return false;
      }
      case 'q': memo_put(le(1)); return false;  // BINPUT
      case 'r': memo_put(le(4)); return false;  // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); return false;  // MEMOIZE
      case 'h': memo_get(le(1)); return false;
      case 'j': memo_get(le(4)); return false;
      case 'c': {  // GLOBAL
        const std::string_view module = line();
        const std::string_view name = line();
        push(global(module, name));
        return false;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = pop(), module = pop();
        if (obj(name).kind != K::Str || obj(module).kind != K::Str) fail(ErrorCode::Corrupt, "STACK_GLOBAL of non-strings");
        push(global(str_of(module), str_of(name)));
        return false;
      }
      case 'R': {  // REDUCE
        const uint32_t args = pop();
        const uint32_t callable = pop();
        push(call(callable, args));
        return false;
      }
      case 0x81:    // NEWOBJ
      case 0x92: {  // NEWOBJ_EX
        if (op == 0x92) {
          const uint32_t kwargs = pop();
          if (obj(kwargs).kind != K::Dict || !dicts_[obj(kwargs).ref].items.empty()) {
            fail(ErrorCode::Unsupported, "NEWOBJ_EX with keyword arguments");
          }
        }
        const uint32_t args = pop();
        const uint32_t cls = pop();
        push(new_object(cls, args));
        return false;
      }
      case 'b': {  // BUILD: object state; harmless for the types we build, anything else refused
        const uint32_t state = pop();
        build(top(), state);
        return false;
      }
      case 'Q': {  // BINPERSID
        const uint32_t pid = pop();
        push(persistent_load(pid));
        return false;
      }
      case 'i':
      case 'o':
        fail(ErrorCode::Unsafe, std::string("protocol-0 ") + (op == 'i' ? "INST" : "OBJ") +
                                    " builds arbitrary objects; refused (nothing was executed)");
      case 0x82:
      case 0x83:
      case 0x84:
        fail(ErrorCode::Unsafe, "EXT opcodes resolve globals through the copyreg registry; refused");
      case 'I': case 'L': case 'S': case 'V': case 'F': case 'P': case 'g': case 'p':
        fail(ErrorCode::Unsupported, std::string("protocol-0 text opcode '") + static_cast<char>(op) + "'");
      case 0x97:
      case 0x98:
        fail(ErrorCode::Unsupported, "out-of-band buffers (pickle protocol 5)");
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02x", op);
        fail(ErrorCode::Corrupt, std::string("unknown pickle opcode ") + buf);
      }
    }
  }
  // --- arena -> Value ---

  // What a subtree becomes when walked with its sharing undone; saturating counts.
  struct Expansion {
    uint64_t height = 0;
    uint64_t nodes = 0;
    uint64_t bytes = 0;   // str/bytes payloads, dict keys as text, tensor views
    uint64_t leaves = 0;  // entries flatten() makes
    uint64_t names = 0;   // bytes of the names flatten() makes, below this node
  };
  static uint64_t add(uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
  }
  static uint64_t mul(uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
  }
  // Adds a child reached under a path component of `part` bytes.
  static void add_child(Expansion& e, const Expansion& child, uint64_t part) {
    e.height = std::max(e.height, add(child.height, 1));
    e.nodes = add(e.nodes, child.nodes);
    e.bytes = add(e.bytes, child.bytes);
    e.leaves = add(e.leaves, child.leaves);
    e.names = add(add(e.names, child.names), mul(child.leaves, add(part, 1)));
  }
  // The walkers and the destructor recurse once per level: never more than they accept.
  int max_depth() const { return std::min(options_.max_depth, kMaxTreeHeight); }
  void check_expansion(const Expansion& e) const {
    if (e.height > static_cast<uint64_t>(max_depth())) {
      fail(ErrorCode::Corrupt, "objects nested deeper than " + std::to_string(max_depth()) +
                                   " (counting shared objects at every place they appear)");
    }
    if (e.nodes > options_.max_expanded_nodes) {
      fail(ErrorCode::Unsafe, "the object tree expands to more than " +
                                  std::to_string(options_.max_expanded_nodes) +
                                  " nodes once its shared objects are walked at every place they "
                                  "appear (the limit for a file this size)");
    }
    if (add(e.bytes, e.names) > options_.max_expanded_bytes) {
      fail(ErrorCode::Unsafe, "the object tree expands to more than " +
                                  std::to_string(options_.max_expanded_bytes) +
                                  " bytes of strings, names and tensor views once its shared "
                                  "objects are walked at every place they appear (the limit for a "
                                  "file this size)");
    }
  }

  Value convert(uint32_t i, int depth) {
    if (depth > max_depth()) {
      fail(ErrorCode::Corrupt, "objects nested deeper than " + std::to_string(max_depth()));
    }
    if (state_[i] == 2) return converted_[i];
    if (state_[i] == 1) fail(ErrorCode::Corrupt, "the pickle builds a reference cycle");
    state_[i] = 1;
    const Obj& o = obj(i);
    Value v;
    Expansion e{1, 1, 0, 1, 0};
    switch (o.kind) {
      case K::None: break;
      case K::Bool: v = Value::boolean(o.flag); break;
      case K::Int: v = Value::integer(o.i); break;
      case K::Float: v = Value::floating(o.f); break;
      case K::Str:
        v = Value::str(strings_[o.ref]);
        e.bytes = v.as_str().size();
        break;
      case K::Bytes:
        v = Value::bytes(strings_[o.ref]);
        e.bytes = v.as_str().size();
        break;
      case K::List:
      case K::Set:
      case K::Tuple: {
        ValueList items;
        const auto& src = seqs_[o.ref];
        items.reserve(src.size());
        if (!src.empty()) e.leaves = 0;
        for (size_t n = 0; n < src.size(); ++n) {
          items.push_back(convert(src[n], depth + 1));
          add_child(e, expansion_[src[n]], std::to_string(n).size());
        }
        v = o.kind == K::Tuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
        break;
      }
      case K::Dict: {
        ValueDict items;
        const auto& src = dicts_[o.ref].items;
        items.reserve(src.size());
        if (!src.empty()) e.leaves = 0;
        for (const auto& [k, val] : src) {
          items.emplace_back(convert(k, depth + 1), convert(val, depth + 1));
          // Walkers write the key as text once per place the dict appears.
          const uint64_t key_text = Value::key_to_string(items.back().first).size();
          Expansion key = expansion_[k];
          key.leaves = 0;
          key.names = 0;
          add_child(e, key, 0);
          e.bytes = add(e.bytes, key_text);
          add_child(e, expansion_[val], key_text);
        }
        v = Value::dict(std::move(items));
        break;
      }
      case K::Tensor:
        v = Value::tensor(tensors_[o.ref]);
        e.bytes = v.as_tensor().nbytes();
        break;
      case K::Storage: {  // a bare storage: a flat 1-D tensor over all of it
        TorchTensor t;
        t.storage = storages_[o.ref];
        t.dtype = t.storage->dtype;
        t.sizes = {static_cast<int64_t>(t.storage->numel)};
        t.strides = {1};
        v = Value::tensor(std::move(t));
        e.bytes = v.as_tensor().nbytes();
        break;
      }
      case K::Global:
        if (static_cast<G>(o.i) == G::DTypeObj) {
          v = Value::str("torch." + torch_dtype_name(static_cast<DType>(o.ref)));
        } else {
          fail(ErrorCode::Unsupported, "a class or function object as a value");
        }
        break;
    }
    check_expansion(e);
    expansion_[i] = e;
    state_[i] = 2;
    converted_[i] = v;
    return v;
  }
  std::span<const std::byte> data_;
  size_t pos_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
  std::vector<Value> converted_;
  std::vector<uint8_t> state_;
  std::vector<Expansion> expansion_;
};

}  // namespace

UnpickleResult unpickle(std::span<const std::byte> data, size_t start, std::string_view source,
                        const StorageResolver& resolve, const UnpickleOptions& options) {
  if (start > data.size()) throw Error(ErrorCode::InvalidArgument, "unpickle start past the data");
  return Unpickler(data, start, source, resolve, options).run();
}

}  // namespace ckptio::pt
