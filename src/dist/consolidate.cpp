// dist::consolidate: a distributed checkpoint to a Hugging Face folder, one tensor in memory at a
// time.
//
// The shard split (plan_shards), each file's layout (plan_safetensors) and the index
// (render_shard_index) are the sharded writer's own, so the output is laid out exactly as
// save_sharded lays out the same tensors. Those planners need views of the right sizes but never
// read them; the views point into an inaccessible address-space reservation, so no tensor memory
// is held while planning. Each tensor is then read into one reused buffer and written at the
// offset its layout gives.
#include <algorithm>

#include <sys/mman.h>

#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/sharded.h"

namespace ckptio::dist {

namespace fs = std::filesystem;

namespace {

// Address space without memory: PROT_NONE, MAP_NORESERVE. Never touched.
class Reservation {
 public:
  explicit Reservation(size_t bytes) : size_(std::max<size_t>(bytes, 1)) {
    void* p = ::mmap(nullptr, size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw system_error(errno, "reserving address space for planning");
    base_ = static_cast<std::byte*>(p);
  }
  ~Reservation() { ::munmap(base_, size_); }
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  std::span<const std::byte> view(size_t bytes) const { return {base_, bytes}; }

 private:
  size_t size_;
  std::byte* base_ = nullptr;
};

}  // namespace

ConsolidateReport consolidate(const fs::path& src, const fs::path& dst,
                              const ConsolidateOptions& options) {
  io::Env& env = options.env ? *options.env : io::Env::posix();
  LoadOptions lo;
  lo.env = &env;
  const Reader reader = Reader::open(src, lo);
  const GlobalIndex& index = reader.index();
  try {
    const io::FileInfo existing = env.stat(dst);
    if (existing.exists && (!existing.is_directory || !env.list_dir(dst).empty())) {
      throw Error(ErrorCode::AlreadyExists, "'" + dst.string() + "' exists and is not an empty folder");
    }
    io::create_dirs_synced(env, dst);

    uint64_t largest = 0;
    for (const IndexTensor& t : index.tensors) largest = std::max(largest, tensor_nbytes(t.dtype, t.shape));
    const Reservation reservation(largest);
    std::vector<NamedTensor> planned;
    planned.reserve(index.tensors.size());
    for (const IndexTensor& t : index.tensors) {
      planned.push_back({t.name, TensorView{t.dtype, t.shape,
                                            reservation.view(tensor_nbytes(t.dtype, t.shape))}});
    }
    const ShardPlan plan = plan_shards(planned, options.max_shard_size, "model");

    ConsolidateReport report;
    report.tensors = planned.size();
    std::vector<std::byte> buffer(largest);
    // Zero tensors still make one (empty) file, as save_sharded does.
    std::vector<ShardPlan::Shard> shards = plan.shards;
    if (shards.empty()) shards.push_back({single_file_name("model"), {}, 0});
    for (const ShardPlan::Shard& shard : shards) {
      std::vector<NamedTensor> members;
      for (size_t m : shard.members) members.push_back(planned[m]);
      SafetensorsWriteOptions wo;  // {"format": "pt"}, like save_sharded's shards
      const SafetensorsLayout layout = plan_safetensors(members, wo);
      io::write_file_atomic(env, dst / shard.file_name, [&](io::WritableFile& f) {
        f.write_at(0, std::as_bytes(std::span(layout.header)));
        for (size_t e = 0; e < layout.entries.size(); ++e) {
          const NamedTensor& m = members[layout.order[e]];
          const std::span<std::byte> bytes(buffer.data(), m.view.bytes.size());
          reader.read_tensor(m.name, bytes);
          f.write_at(layout.header.size() + layout.entries[e].begin, bytes);
          report.tensor_bytes += bytes.size();
        }
      });
      report.files.push_back(shard.file_name);
    }
    if (plan.sharded()) {
      const std::string name = index_file_name("model");
      io::write_file_atomic(env, dst / name, render_shard_index(plan, planned));
      report.files.push_back(name);
    }
    return report;
  } catch (const Error& e) {
    throw e.annotate("consolidating '" + src.string() + "' into '" + dst.string() + "'");
  }
}

}  // namespace ckptio::dist
