// SafetensorsReader: validates on open, then hands out zero-copy views (mmap) or copies (pread).
#include <array>
#include <cstring>
#include <unordered_map>

#include "ckptio/error.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/safetensors.h"
#include "format/safetensors/header_length.h"

namespace ckptio {

struct SafetensorsReader::Impl {
  std::filesystem::path path;
  ReadMode mode = ReadMode::Mmap;
  std::unique_ptr<io::ReadableFile> file;
  std::shared_ptr<const io::MappedFile> map;  // Mmap mode only
  SafetensorsHeader header;
  uint64_t file_size = 0;
  std::unordered_map<std::string_view, size_t> by_name;  // views into header.tensors
};

SafetensorsReader::SafetensorsReader(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

SafetensorsReader SafetensorsReader::open(const std::filesystem::path& path,
                                          const SafetensorsReadOptions& options) {
  const ReadMode mode = options.mode;
  io::Env& env = options.env ? *options.env : io::Env::posix();
  const SafetensorsLimits& limits = options.limits;
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  impl->mode = mode;
  const std::string source = path.string();
  impl->file = env.open_read(path);
  if (mode == ReadMode::Mmap) {
    impl->map = env.map_open_file(*impl->file);  // the same inode as the preads, not a reopen
    const auto bytes = impl->map->bytes();
    impl->file_size = bytes.size();
    impl->header = parse_safetensors(bytes, source, limits);
  } else {
    impl->file_size = impl->file->size();
    std::array<std::byte, 8> first{};
    if (impl->file_size >= 8) impl->file->read_exact(0, first);
    const uint64_t n = checked_header_length(first, impl->file_size, source, limits);
    std::string header(static_cast<size_t>(n), '\0');
    impl->file->read_exact(8, std::as_writable_bytes(std::span(header.data(), header.size())));
    impl->header = parse_safetensors_header(header, impl->file_size - 8 - n, source, limits);
  }
  impl->by_name.reserve(impl->header.tensors.size());
  for (size_t i = 0; i < impl->header.tensors.size(); ++i) {
    impl->by_name.emplace(impl->header.tensors[i].name, i);
  }
  return SafetensorsReader(std::move(impl));
}

const std::filesystem::path& SafetensorsReader::path() const { return impl_->path; }
ReadMode SafetensorsReader::mode() const { return impl_->mode; }
const SafetensorsHeader& SafetensorsReader::header() const { return impl_->header; }
uint64_t SafetensorsReader::file_size() const { return impl_->file_size; }
const io::ReadableFile& SafetensorsReader::file() const { return *impl_->file; }

const TensorInfo* SafetensorsReader::find(std::string_view name) const {
  const auto it = impl_->by_name.find(name);
  return it == impl_->by_name.end() ? nullptr : &impl_->header.tensors[it->second];
}

const TensorInfo& SafetensorsReader::info(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  throw Error(ErrorCode::NotFound,
              "'" + impl_->path.string() + "': no tensor named \"" + std::string(name) + "\"");
}

Tensor SafetensorsReader::tensor(std::string_view name) const {
  const TensorInfo& t = info(name);
  if (impl_->mode == ReadMode::Pread) return read_owned(name);
  const auto bytes = impl_->map->bytes().subspan(impl_->header.data_start + t.begin, t.nbytes());
  return Tensor::from_owner(t.dtype, t.shape, bytes, impl_->map, Tensor::Storage::Mapped);
}

Tensor SafetensorsReader::read_owned(std::string_view name) const {
  const TensorInfo& t = info(name);
  // Tensors of 2 MiB and more land in memory advised for huge pages: faulting fresh memory in
  // 4 KiB at a time would cost about as much as the read.
  std::shared_ptr<std::byte> buffer = io::allocate_read_buffer(static_cast<size_t>(t.nbytes()));
  const std::span<std::byte> bytes(buffer.get(), static_cast<size_t>(t.nbytes()));
  read_into(name, bytes);
  return Tensor::from_owner(t.dtype, t.shape, bytes, std::move(buffer), Tensor::Storage::Heap);
}

void SafetensorsReader::read_into(std::string_view name, std::span<std::byte> dst) const {
  const TensorInfo& t = info(name);
  if (dst.size() != t.nbytes()) {
    throw Error(ErrorCode::InvalidArgument,
                "'" + impl_->path.string() + "': tensor \"" + t.name + "\" has " +
                    std::to_string(t.nbytes()) + " bytes, destination has " +
                    std::to_string(dst.size()));
  }
  if (dst.empty()) return;
  const uint64_t offset = impl_->header.data_start + t.begin;
  if (impl_->mode == ReadMode::Mmap) {
    std::memcpy(dst.data(), impl_->map->bytes().data() + offset, dst.size());
  } else {
    // Through the parallel reader: a large tensor is read by several threads (one when this
    // runs inside another parallel read, such as a load of every tensor).
    const io::ReadRange range{.file = impl_->file.get(), .offset = offset, .dst = dst, .tensor = t.name};
    io::read_parallel({&range, 1});
  }
}

std::vector<Tensor> SafetensorsReader::read_all_owned(const io::ParallelReadOptions& options) const {
  const SafetensorsHeader& h = impl_->header;
  // One allocation for the whole data section, left uninitialised (the reads overwrite every
  // byte; zeroing first would cost a full extra pass) and backed by huge pages where possible.
  // The data starts at the same offset within a page as in the file: the copy out of the page
  // cache is fastest that way (up to 2-4x on some CPUs) and O_DIRECT can read straight into it.
  // Tensors are then as aligned as in a mapping of the file: to 8 bytes at least, enough for every
  // element type, where the header is padded to 8 bytes as the format asks (elsewhere the buffer
  // starts at its own 2 MiB boundary, as before).
  const size_t lead = h.data_start % 8 == 0 ? static_cast<size_t>(h.data_start % 4096) : 0;
  const std::shared_ptr<std::byte> whole =
      io::allocate_read_buffer(static_cast<size_t>(h.data_bytes) + lead);
  const std::shared_ptr<std::byte> buffer(whole, whole.get() + lead);
  std::vector<io::ReadRange> requests;
  requests.reserve(h.tensors.size());
  for (const TensorInfo& t : h.tensors) {
    requests.push_back({.file = impl_->file.get(),
                        .offset = h.data_start + t.begin,
                        .dst = std::span(buffer.get() + t.begin, static_cast<size_t>(t.nbytes())),
                        .tensor = t.name});
  }
  try {
    io::read_parallel(requests, options);
  } catch (const Error& e) {
    throw e.annotate("loading '" + impl_->path.string() + "'");
  }
  std::vector<Tensor> out;
  out.reserve(h.tensors.size());
  for (const TensorInfo& t : h.tensors) {
    const std::span<const std::byte> bytes(buffer.get() + t.begin,
                                           static_cast<size_t>(t.nbytes()));
    out.push_back(Tensor::from_owner(t.dtype, t.shape, bytes, buffer, Tensor::Storage::Heap));
  }
  return out;
}

}  // namespace ckptio
