// dist::Reader and dist::load: the N -> M read path. Each wanted box is intersected with the
// stored chunks; the intersections become preads straight into the caller's buffers (merged where
// contiguous in both the file and the buffer) run by io::read_parallel.
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "dist/box.h"
#include "dist/plan.h"

namespace ckptio::dist {

namespace fs = std::filesystem;

struct Reader::Impl {
  fs::path dir;
  LoadOptions options;
  io::Env* env = nullptr;
  GlobalIndex index;
  std::unordered_map<std::string, size_t> by_name;
  mutable std::mutex mutex;
  mutable std::vector<std::unique_ptr<io::ReadableFile>> files;

  const io::ReadableFile& file(uint32_t i) const {
    std::lock_guard lock(mutex);
    if (!files[i]) {
      const IndexFile& f = index.files[i];
      auto opened = env->open_read(dir / f.name);
      if (opened->size() != f.size) {
        throw Error(ErrorCode::Corrupt, "'" + (dir / f.name).string() + "' has " +
                                            std::to_string(opened->size()) +
                                            " bytes; the index says " + std::to_string(f.size));
      }
      files[i] = std::move(opened);
    }
    return *files[i];
  }
};

Reader::Reader(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Reader Reader::open(const fs::path& dir, const LoadOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->dir = dir;
  impl->options = options;
  impl->env = options.env ? options.env : &io::Env::posix();
  const fs::path index_path = dir / kIndexName;
  const std::string text = io::read_small_file(*impl->env, index_path, kMaxIndexBytes);
  impl->index = parse_index(text, index_path.string());
  for (size_t i = 0; i < impl->index.tensors.size(); ++i) {
    impl->by_name.emplace(impl->index.tensors[i].name, i);
  }
  impl->files.resize(impl->index.files.size());
  return Reader(std::move(impl));
}

const fs::path& Reader::dir() const { return impl_->dir; }
const GlobalIndex& Reader::index() const { return impl_->index; }

const IndexTensor* Reader::find(std::string_view name) const {
  auto it = impl_->by_name.find(std::string(name));
  return it == impl_->by_name.end() ? nullptr : &impl_->index.tensors[it->second];
}

LoadReport Reader::read(std::span<const LoadItem> items, unsigned threads) const {
  const Impl& im = *impl_;
  // Every intersection, then sorted by file and offset: the reads sweep each file front to back
  // (kernel readahead works for a cold cache whatever the items' order) and neighbours that are
  // contiguous in both the file and the destination, with the same conversion, become one pread.
  struct Piece {
    uint32_t file;
    uint64_t offset;
    std::span<std::byte> dst;
    DType from, to;
    uint64_t in_size, out_size;  // element sizes; 0: a sub-byte dtype, never merged
  };
  std::vector<Piece> pieces;
  uint64_t in_size = 0, out_size = 0;  // of the item being added
  auto add = [&](uint32_t file, uint64_t offset, std::span<std::byte> dst, DType from, DType to) {
    pieces.push_back({file, offset, dst, from, to, in_size, out_size});
  };
  LoadReport report;
  for (const LoadItem& item : items) {
    const ShardedTensor& want = item.tensor;
    // The destination's layout: the item's, in the dtype it is loaded as.
    ShardedTensor local = want;
    if (item.load_as) local.dtype = *item.load_as;
    detail::check_item(local, item.bytes.size(), "load item");
    const IndexTensor* t = find(want.name);
    if (!t) {
      throw Error(ErrorCode::NotFound, "distributed checkpoint '" + im.dir.string() +
                                           "' has no tensor '" + printable(want.name) + "'");
    }
    if (t->dtype != want.dtype || t->shape != want.global_shape) {
      throw Error(ErrorCode::Mismatch,
                  "tensor '" + printable(want.name) + "' is " + std::string(dtype_name(t->dtype)) +
                      " " + shape_to_string(t->shape) + " in '" + im.dir.string() +
                      "', the load item asks for " + std::string(dtype_name(want.dtype)) + " " +
                      shape_to_string(want.global_shape));
    }
    if (local.dtype != t->dtype && !can_convert(t->dtype, local.dtype)) {
      throw Error(ErrorCode::Mismatch, "tensor '" + printable(want.name) + "' is " +
                                           std::string(dtype_name(t->dtype)) + " in '" +
                                           im.dir.string() + "' and cannot be loaded as " +
                                           std::string(dtype_name(local.dtype)));
    }
    in_size = static_cast<uint64_t>(dtype_bits(t->dtype)) / 8;
    out_size = static_cast<uint64_t>(dtype_bits(local.dtype)) / 8;
    if (want.placement == Placement::FlatRange) {
      // Padding past the tensor's end is zeroed, as ZeRO pads.
      const uint64_t numel = shape_numel(t->shape);
      const uint64_t end = std::min(numel, want.flat_begin + want.flat_length);
      const uint64_t real = end > want.flat_begin ? end - want.flat_begin : 0;
      if (item.bytes.size() > real * out_size) {
        std::memset(item.bytes.data() + real * out_size, 0, item.bytes.size() - real * out_size);
      }
    }
    for (const detail::Region& region : detail::regions_of(local)) {
      const std::span<std::byte> dst = item.bytes.subspan(region.byte_offset, region.nbytes);
      Box common;
      for (const IndexChunk& c : t->chunks) {
        if (!detail::intersect(c.box, region.box, common)) continue;
        if (in_size == 0 || out_size == 0) {  // a sub-byte dtype: stored and wanted whole (validated)
          add(c.file, c.begin, dst, t->dtype, local.dtype);
          continue;
        }
        detail::for_each_run(c.box, region.box, common, [&](uint64_t so, uint64_t dof, uint64_t n) {
          add(c.file, c.begin + so * in_size, dst.subspan(dof * out_size, n * out_size), t->dtype,
              local.dtype);
        });
      }
    }
  }
  std::stable_sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) {
    return a.file != b.file ? a.file < b.file : a.offset < b.offset;
  });
  std::vector<io::ReadRange> reqs;
  reqs.reserve(pieces.size());
  const Piece* prev = nullptr;
  for (const Piece& p : pieces) {
    if (prev && prev->file == p.file && prev->from == p.from && prev->to == p.to &&
        p.in_size > 0 && p.out_size > 0) {
      io::ReadRange& last = reqs.back();
      const uint64_t last_src = last.dst.size() / p.out_size * p.in_size;
      if (last.offset + last_src == p.offset && last.dst.data() + last.dst.size() == p.dst.data()) {
        last.dst = std::span<std::byte>(last.dst.data(), last.dst.size() + p.dst.size());
        continue;
      }
    }
    // Opened (and its size checked) on first use.
    reqs.push_back({.file = &im.file(p.file), .offset = p.offset, .dst = p.dst, .from = p.from,
                    .to = p.to, .tensor = {}});
    prev = &p;
  }
  report.reads = reqs.size();
  try {
    io::ParallelReadOptions ro = im.options.read;
    if (threads > 0) ro.threads = threads;
    report.bytes_read = io::read_parallel(reqs, ro);
  } catch (const Error& e) {
    throw e.annotate("loading distributed checkpoint '" + im.dir.string() + "'");
  }
  return report;
}

void Reader::check_files() const {
  for (uint32_t i = 0; i < impl_->index.files.size(); ++i) (void)impl_->file(i);
}

LoadReport Reader::read_tensor(std::string_view name, std::span<std::byte> dst) const {
  const IndexTensor* t = find(name);
  if (!t) {
    throw Error(ErrorCode::NotFound, "distributed checkpoint '" + impl_->dir.string() +
                                         "' has no tensor '" + printable(name) + "'");
  }
  const LoadItem item{ShardedTensor::replicated(t->name, t->dtype, t->shape), dst};
  return read(std::span(&item, 1));
}

LoadReport load(const fs::path& dir, std::span<const LoadItem> items, const LoadOptions& options) {
  return Reader::open(dir, options).read(items);
}

}  // namespace ckptio::dist
