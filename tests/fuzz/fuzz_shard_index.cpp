// libFuzzer target for the shard index parser (model.safetensors.index.json, the ColossalAI and
// pytorch_model.bin flavours). Each input is parsed under both kinds of index name. The only
// acceptable failure is a ckptio::Error; any other exception (a JSON library type error leaking
// out, say), a crash, or an accepted index that breaks the parser's promises aborts: every shard
// path stays below the folder, every weight_map entry points at a listed shard, no name twice.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <set>
#include <string>
#include <string_view>

#include "ckptio/error.h"
#include "ckptio/sharded.h"

namespace {

using namespace ckptio;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_shard_index: %s\n", what);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) finding(what);
}

bool stays_below(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.find('\\') != std::string::npos) return false;
  size_t start = 0;
  while (true) {
    const size_t slash = path.find('/', start);
    const std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

void check_index(const ShardIndex& index) {
  std::set<std::string> shards;
  for (const std::string& f : index.shard_files) {
    check(stays_below(f), "accepted a shard path that leaves the folder");
    check(shards.insert(f).second, "a shard file listed twice");
  }
  std::set<std::string> names;
  for (const auto& [name, shard] : index.weight_map) {
    check(!name.empty(), "accepted an empty tensor name");
    check(shard < index.shard_files.size(), "weight_map points past the shard list");
    check(names.insert(name).second, "accepted a tensor name twice");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const char* name : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
    try {
      check_index(parse_shard_index(text, "/fuzz", name));
    } catch (const Error&) {
      // A typed rejection is the expected outcome for bad input.
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fuzz_shard_index: unexpected exception: %s\n", e.what());
      std::abort();
    }
  }
  return 0;
}
