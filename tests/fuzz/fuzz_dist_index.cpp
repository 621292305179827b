// libFuzzer target for the distributed checkpoint's global index parser (ckptio.distributed.json).
// The only acceptable failure is a ckptio::Error; any other exception, a crash, a hang, or an
// accepted index that breaks the validator's promises aborts: every chunk inside its tensor and
// its file, byte ranges of the right length, chunk volumes adding up to each tensor's elements.
// parse_index (simdjson, falling back to the reference) and the reference reader (nlohmann) must
// also agree on every input: the same index, or the same error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "dist/index_parse.h"

namespace {

using namespace ckptio;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_dist_index: %s\n", what);
    std::abort();
  }
}

void check_index(const dist::GlobalIndex& index) {
  for (const dist::IndexTensor& t : index.tensors) {
    const uint64_t numel = shape_numel(t.shape);
    uint64_t covered = 0;
    for (const dist::IndexChunk& c : t.chunks) {
      check(c.file < index.files.size(), "a chunk names a file past the list");
      check(c.end <= index.files[c.file].size && c.begin <= c.end, "a chunk's bytes leave its file");
      check(c.box.offsets.size() == t.shape.size() && c.box.shape.size() == t.shape.size(),
            "a chunk of the wrong rank");
      uint64_t volume = 1;
      for (size_t d = 0; d < t.shape.size(); ++d) {
        check(c.box.offsets[d] >= 0 && c.box.shape[d] > 0 &&
                  c.box.offsets[d] + c.box.shape[d] <= t.shape[d],
              "a chunk outside its tensor");
        volume *= static_cast<uint64_t>(c.box.shape[d]);
      }
      covered += volume;
    }
    check(covered == numel, "chunks that do not cover their tensor exactly");
  }
}

// "index <json>" or "error <code> <message>"; aborts on anything but a ckptio::Error.
template <class Parse>
std::string outcome(Parse parse, std::string_view text) {
  try {
    const dist::GlobalIndex index = parse(text, "fuzz");
    check_index(index);
    return "index " + dist::index_to_json(index);
  } catch (const Error& e) {
    // A typed rejection is the expected outcome for bad input.
    return "error " + std::to_string(static_cast<int>(e.code())) + " " + e.message();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_dist_index: unexpected exception: %s\n", e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string fast = outcome(dist::parse_index, text);
  const std::string reference = outcome(dist::detail::parse_index_with_nlohmann, text);
  if (fast != reference) {
    std::fprintf(stderr, "fuzz_dist_index: the readers disagree:\n  %s\n  %s\n", fast.c_str(), reference.c_str());
    std::abort();
  }
  return 0;
}
