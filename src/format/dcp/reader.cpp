// DcpReader: the folder's `.metadata`, then items read one at a time (a pread of exactly the
// item's bytes, parsed by the torch.save reader) and assembled into the boxes callers ask for.
#include <map>
#include <memory>
#include <set>
#include <string>

#include "ckptio/dcp.h"
#include "ckptio/error.h"
#include "format/dcp/metadata_checks.h"

namespace ckptio::dcp {

namespace {

// The metadata of a checkpoint of millions of tensors is tens of MB; anything far bigger is not
// a `.metadata` file.
constexpr uint64_t kMaxMetadataBytes = uint64_t{1} << 30;

std::string read_whole(io::Env& env, const std::filesystem::path& path) {
  auto f = env.open_read(path);
  if (f->size() > kMaxMetadataBytes) {
    throw Error(ErrorCode::Corrupt, path.string() + ": " + std::to_string(f->size()) +
                                        " bytes is too large for DCP metadata");
  }
  std::string s(f->size(), '\0');
  f->read_exact(0, std::as_writable_bytes(std::span(s)));
  return s;
}

void check_box(const DcpTensor& t, const Shape& offsets, const Shape& sizes) {
  if (offsets.size() != t.shape.size() || sizes.size() != t.shape.size()) {
    throw Error(ErrorCode::InvalidArgument, "tensor '" + t.name + "': box rank differs from " + shape_to_string(t.shape));
  }
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (offsets[d] < 0 || sizes[d] < 0 || offsets[d] > t.shape[d] || sizes[d] > t.shape[d] - offsets[d]) {
      throw Error(ErrorCode::InvalidArgument, "tensor '" + t.name + "': box " + shape_to_string(offsets) + " + " +
                                                  shape_to_string(sizes) + " outside " + shape_to_string(t.shape));
    }
  }
}

}  // namespace

bool is_dcp_checkpoint(const std::filesystem::path& dir, io::Env* env) {
  io::Env& e = env ? *env : io::Env::posix();
  const io::FileInfo d = e.stat(dir);
  if (!d.exists || !d.is_directory) return false;
  const io::FileInfo m = e.stat(dir / ".metadata");
  return m.exists && !m.is_directory;
}

DcpReader DcpReader::open(const std::filesystem::path& dir, io::Env* env) {
  io::Env& e = env ? *env : io::Env::posix();
  const std::filesystem::path meta_path = dir / ".metadata";
  const std::string bytes = read_whole(e, meta_path);
  DcpMetadata meta = parse_dcp_metadata(std::as_bytes(std::span(bytes)), meta_path.string());
  // Every item inside its data file, checked once per file.
  std::map<std::string, uint64_t> sizes;
  auto check = [&](const ItemLocation& item, const std::string& what) {
    auto it = sizes.find(item.file);
    if (it == sizes.end()) {
      const io::FileInfo info = e.stat(dir / item.file);
      if (!info.exists || info.is_directory) {
        throw Error(ErrorCode::Corrupt, (dir / item.file).string() + ": the data file of " + what +
                                            " named by .metadata is missing");
      }
      it = sizes.emplace(item.file, info.size).first;
    }
    if (item.offset + item.length > it->second) {
      throw Error(ErrorCode::Corrupt, (dir / item.file).string() + ": " + what + " at bytes " +
                                          std::to_string(item.offset) + ".." +
                                          std::to_string(item.offset + item.length) +
                                          " reaches past the file's end (" + std::to_string(it->second) +
                                          " bytes)");
    }
  };
  for (const DcpTensor& t : meta.tensors) {
    for (size_t i = 0; i < t.chunks.size(); ++i) check(t.chunks[i].item, "tensor '" + t.name + "' chunk " + std::to_string(i));
  }
  for (const DcpBytes& b : meta.bytes) check(b.item, "value '" + b.name + "'");
  return DcpReader(dir, e, std::move(meta));
}

const DcpTensor& DcpReader::tensor(std::string_view name) const {
  for (const DcpTensor& t : meta_.tensors) {
    if (t.name == name) return t;
  }
  throw Error(ErrorCode::NotFound, dir_.string() + ": no tensor '" + std::string(name) + "' in the DCP checkpoint");
}

const DcpBytes& DcpReader::bytes_item(std::string_view name) const {
  for (const DcpBytes& b : meta_.bytes) {
    if (b.name == name) return b;
  }
  throw Error(ErrorCode::NotFound, dir_.string() + ": no value '" + std::string(name) + "' in the DCP checkpoint");
}

pt::TorchFile DcpReader::load_item(const ItemLocation& item) const {
  const std::filesystem::path path = dir_ / item.file;
  auto f = env_->open_read(path);
  if (item.offset + item.length > f->size()) {
    throw Error(ErrorCode::Corrupt, path.string() + ": item at byte " + std::to_string(item.offset) +
                                        " reaches past the file's end");
  }
  auto buf = std::make_shared<std::vector<std::byte>>(item.length);
  f->read_exact(item.offset, *buf);
  const std::string source = path.string() + " (item at byte " + std::to_string(item.offset) + ")";
  pt::TorchLoadOptions options;
  options.env = env_;
  return pt::parse_torch_bytes(*buf, source, buf, options);
}

Tensor DcpReader::read_chunk(const DcpTensor& t, const DcpChunk& c) const {
  const pt::TorchFile f = load_item(c.item);
  const std::string where = (dir_ / c.item.file).string() + " at byte " + std::to_string(c.item.offset) +
                            ": tensor '" + t.name + "' chunk at " + shape_to_string(c.offsets);
  if (!f.root.is_tensor()) {
    throw Error(ErrorCode::Corrupt, where + ": the item holds a " + std::string(pt::kind_name(f.root.kind())) + ", not a tensor");
  }
  const pt::TorchTensor& tt = f.root.as_tensor();
  if (tt.dtype != t.dtype || tt.sizes != c.sizes) {
    throw Error(ErrorCode::Corrupt, where + ": the item holds " + std::string(dtype_name(tt.dtype)) + " " +
                                        shape_to_string(tt.sizes) + ", the metadata says " +
                                        std::string(dtype_name(t.dtype)) + " " + shape_to_string(c.sizes));
  }
  return tt.contiguous();
}

Tensor DcpReader::read_box(std::string_view name, const Shape& offsets, const Shape& sizes) const {
  const DcpTensor& t = tensor(name);
  check_box(t, offsets, sizes);
  Tensor out = Tensor::empty(t.dtype, sizes);
  read_box_into(name, offsets, sizes, t.dtype, out.mutable_bytes());
  return out;
}

void DcpReader::read_box_into(std::string_view name, const Shape& offsets, const Shape& sizes,
                              DType as, std::span<std::byte> dst) const {
  const DcpTensor& t = tensor(name);
  check_box(t, offsets, sizes);
  const uint64_t want = tensor_nbytes(as, sizes);
  if (dst.size() != want) {
    throw Error(ErrorCode::InvalidArgument, "tensor '" + t.name + "': box " + shape_to_string(sizes) + " of " +
                                                std::string(dtype_name(as)) + " is " + std::to_string(want) +
                                                " bytes, the destination " + std::to_string(dst.size()));
  }
  if (as != t.dtype && !can_convert(t.dtype, as)) {
    throw Error(ErrorCode::Mismatch, "cannot convert tensor '" + t.name + "' from " +
                                         std::string(dtype_name(t.dtype)) + " to " + std::string(dtype_name(as)));
  }
  // The chunks cover the tensor exactly (checked at open), so every byte of the box is written.
  if (want == 0) return;
  const size_t item = static_cast<size_t>(dtype_bits(as) / 8);
  for (const DcpChunk& c : t.chunks) {
    bool meets = true;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (c.offsets[d] >= offsets[d] + sizes[d] || offsets[d] >= c.offsets[d] + c.sizes[d]) meets = false;
    }
    if (!meets) continue;
    Tensor chunk = read_chunk(t, c);
    if (as != t.dtype) {
      Tensor converted = Tensor::empty(as, c.sizes);
      convert_elements(t.dtype, chunk.bytes().data(), as, converted.mutable_bytes().data(),
                       static_cast<size_t>(shape_numel(c.sizes)));
      chunk = std::move(converted);
    }
    copy_intersection(chunk.bytes().data(), c.offsets, c.sizes, dst.data(), offsets, sizes, item);
  }
}

Tensor DcpReader::read_tensor(std::string_view name) const {
  const DcpTensor& t = tensor(name);
  return read_box(name, Shape(t.shape.size(), 0), t.shape);
}

pt::Value DcpReader::read_value(std::string_view name) const {
  return load_item(bytes_item(name).item).root;
}

void DcpReader::verify() const {
  for (const DcpTensor& t : meta_.tensors) {
    for (const DcpChunk& c : t.chunks) read_chunk(t, c);
  }
  for (const DcpBytes& b : meta_.bytes) load_item(b.item);
}

}  // namespace ckptio::dcp
