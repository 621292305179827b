// libFuzzer target for the safetensors header parser and reader.
//
// Each input is used three ways: as a whole file (parse_safetensors), as header JSON alone
// (parse_safetensors_header), and as a file opened through SafetensorsReader in both modes over
// an in-memory Env, reading every tensor. The only acceptable failure is a ckptio::Error; any
// other exception, a crash, or a broken invariant on an accepted file aborts. An accepted file
// must also survive serialize -> parse with the same tensors.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/io.h"
#include "ckptio/safetensors.h"
#include "ckptio/tensor.h"

namespace {

using namespace ckptio;
namespace fs = std::filesystem;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) finding(what);
}

// Runs `f`; a ckptio::Error is an accepted outcome, anything else thrown is a finding.
template <typename F>
bool run_guarded(F&& f) {
  try {
    f();
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_safetensors: non-ckptio exception: %s\n", e.what());
    std::abort();
  }
}

// The fuzz input as the one file of a read-only Env: no disk I/O, and both reader modes see
// exactly the bytes libFuzzer produced.
class InputFile final : public io::ReadableFile, public io::MappedFile {
 public:
  InputFile(fs::path path, std::span<const std::byte> bytes) : path_(std::move(path)), bytes_(bytes) {}
  const fs::path& path() const override { return path_; }
  uint64_t size() const override { return bytes_.size(); }
  void read_exact(uint64_t offset, std::span<std::byte> dst) const override {
    if (offset > bytes_.size() || dst.size() > bytes_.size() - offset) {
      throw Error(ErrorCode::Corrupt, "read past the end of the fuzz input");
    }
    if (!dst.empty()) std::memcpy(dst.data(), bytes_.data() + offset, dst.size());
  }
  std::span<const std::byte> bytes() const override { return bytes_; }

 private:
  fs::path path_;
  std::span<const std::byte> bytes_;
};

class InputEnv final : public io::Env {
 public:
  explicit InputEnv(std::span<const std::byte> bytes) : bytes_(bytes) {}
  std::unique_ptr<io::ReadableFile> open_read(const fs::path& path) override {
    return std::make_unique<InputFile>(path, bytes_);
  }
  std::shared_ptr<const io::MappedFile> map_read(const fs::path& path) override {
    return std::make_shared<InputFile>(path, bytes_);
  }
  std::unique_ptr<io::WritableFile> open_write(const fs::path&, io::OpenMode) override {
    throw Error(ErrorCode::Unsupported, "read-only fuzz env");
  }
  void rename(const fs::path&, const fs::path&) override { refuse(); }
  void sync_dir(const fs::path&) override { refuse(); }
  void remove(const fs::path&) override { refuse(); }
  void remove_all(const fs::path&) override { refuse(); }
  void create_dirs(const fs::path&) override { refuse(); }
  std::vector<std::string> list_dir(const fs::path&) override { refuse(); }
  io::FileInfo stat(const fs::path&) override {
    return io::FileInfo{.exists = true, .is_regular_file = true, .size = bytes_.size()};
  }

 private:
  [[noreturn]] static void refuse() { throw Error(ErrorCode::Unsupported, "read-only fuzz env"); }
  std::span<const std::byte> bytes_;
};

// What every accepted file must satisfy, whichever way it was parsed.
void check_accepted(const SafetensorsHeader& h, uint64_t file_size) {
  check(h.data_start == 8 + h.header_bytes, "data_start != 8 + N");
  check(h.data_start + h.data_bytes == file_size, "data section does not end the file");
  uint64_t expected_begin = 0;
  for (const TensorInfo& t : h.tensors) {
    check(t.begin == expected_begin, "accepted a hole or an overlap");
    check(t.end >= t.begin, "accepted a reversed range");
    check(tensor_nbytes(t.dtype, t.shape) == t.nbytes(), "accepted a size mismatch");
    check(t.name != "__metadata__", "accepted a tensor named __metadata__");
    expected_begin = t.end;
  }
  check(expected_begin == h.data_bytes, "tensors do not cover the data section");
}

void read_every_tensor(std::span<const std::byte> file, const SafetensorsHeader& parsed,
                       ReadMode mode) {
  InputEnv env(file);
  const bool ok = run_guarded([&] {
    const SafetensorsReader reader = SafetensorsReader::open("fuzz.safetensors", {.mode = mode, .env = &env});
    check(reader.tensors().size() == parsed.tensors.size(), "reader and parser disagree");
    for (const TensorInfo& info : reader.tensors()) {
      const auto want = file.subspan(reader.header().data_start + info.begin, info.nbytes());
      const Tensor view = reader.tensor(info.name);
      check(view.nbytes() == want.size() &&
                (want.empty() || std::memcmp(view.bytes().data(), want.data(), want.size()) == 0),
            "tensor() bytes differ from the file");
      const Tensor owned = reader.read_owned(info.name);
      check(owned.storage() == Tensor::Storage::Heap, "read_owned is not a heap tensor");
      check(owned.nbytes() == want.size() &&
                (want.empty() || std::memcmp(owned.bytes().data(), want.data(), want.size()) == 0),
            "read_owned bytes differ from the file");
      std::vector<std::byte> dst(info.nbytes());
      reader.read_into(info.name, dst);
      check(dst.empty() || std::memcmp(dst.data(), want.data(), dst.size()) == 0,
            "read_into bytes differ from the file");
    }
  });
  check(ok, "SafetensorsReader rejected a file parse_safetensors accepted");
}

void round_trip(std::span<const std::byte> file, const SafetensorsHeader& h) {
  std::vector<NamedTensor> named;
  named.reserve(h.tensors.size());
  for (const TensorInfo& t : h.tensors) {
    named.push_back({t.name, TensorView{t.dtype, t.shape,
                                        file.subspan(h.data_start + t.begin, t.nbytes())}});
  }
  SafetensorsWriteOptions options;
  options.metadata = h.metadata;
  options.omit_metadata = !h.metadata.has_value();
  std::string again;
  try {
    again = serialize_safetensors(named, options);
  } catch (const Error& e) {
    std::fprintf(stderr, "fuzz_safetensors: cannot re-serialize an accepted file: %s\n", e.what());
    std::abort();
  }
  const auto again_bytes = std::as_bytes(std::span(again.data(), again.size()));
  SafetensorsHeader h2;
  if (!run_guarded([&] { h2 = parse_safetensors(again_bytes, "re-serialized"); })) {
    finding("the writer produced a file the reader rejects");
  }
  check(h2.metadata == h.metadata, "metadata changed in a round trip");
  check(h2.tensors.size() == h.tensors.size(), "tensor count changed in a round trip");
  for (const TensorInfo& t : h2.tensors) {
    const TensorInfo* original = nullptr;
    for (const TensorInfo& o : h.tensors) {
      if (o.name == t.name) original = &o;
    }
    check(original != nullptr, "a tensor name changed in a round trip");
    check(original->dtype == t.dtype && original->shape == t.shape, "dtype/shape changed");
    check(t.nbytes() == original->nbytes() &&
              (t.nbytes() == 0 ||
               std::memcmp(again_bytes.data() + h2.data_start + t.begin,
                           file.data() + h.data_start + original->begin, t.nbytes()) == 0),
          "tensor bytes changed in a round trip");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = std::as_bytes(std::span(data, size));

  // The header parser alone, on the input as JSON, against a few data-section sizes.
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  for (uint64_t data_bytes : {uint64_t{0}, uint64_t{size}, uint64_t{1} << 62}) {
    run_guarded([&] {
      const SafetensorsHeader h = parse_safetensors_header(json, data_bytes, "fuzz-json");
      uint64_t covered = 0;
      for (const TensorInfo& t : h.tensors) covered = t.end;
      check(covered == data_bytes, "header accepted with a data section it does not cover");
    });
  }

  // The whole input as a file.
  SafetensorsHeader parsed;
  if (!run_guarded([&] { parsed = parse_safetensors(file, "fuzz.safetensors"); })) return 0;
  check_accepted(parsed, size);
  read_every_tensor(file, parsed, ReadMode::Mmap);
  read_every_tensor(file, parsed, ReadMode::Pread);
  round_trip(file, parsed);
  return 0;
}
