#include "checkpoint/tensor_file_writer.h"

#include <memory>
#include <thread>

#include "checkpoint/file_hash.h"
#include "ckptio/error.h"
#include "ckptio/sharded.h"
#include "core/thread_start.h"
#include "format/safetensors/file_writer.h"

namespace ckptio::checkpoint {

namespace fs = std::filesystem;

static std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

WrittenFile write_text_file(io::Env& env, const fs::path& root, const std::string& rel,
                            std::string_view text, const WriteSettings& settings) {
  auto file = env.open_write(root / rel, io::OpenMode::CreateNew);
  file->write_at(0, as_bytes(text));
  if (settings.sync) file->sync();
  file->close();
  WrittenFile out{rel, text.size(), {}};
  if (settings.checksums) out.xxh3_128 = xxh3_128_hex(text);
  return out;
}

namespace {

struct PlannedFile {
  std::string rel;
  std::span<const NamedTensor> tensors;
  SafetensorsLayout layout;
  std::unique_ptr<io::WritableFile> file;
};

// The bytes of a planned file in order, for the checksum: the header, then the tensors back to
// back in data order (plan_safetensors packs them).
std::string hash_planned(const PlannedFile& f) {
  Xxh3Hasher hasher;
  hasher.update(as_bytes(f.layout.header));
  for (size_t index : f.layout.order) hasher.update(f.tensors[index].view.bytes);
  return hasher.hex();
}

// Writes the files through the one safetensors writer; their checksums run on another core over
// the same memory meanwhile.
std::vector<WrittenFile> write_planned(io::Env& env, const fs::path& root,
                                       std::vector<PlannedFile>& files,
                                       const WriteSettings& settings) {
  std::vector<WrittenFile> out;
  for (const auto& f : files) out.push_back({f.rel, f.layout.file_size, {}});
  auto hash = [&files, &out] {
    for (size_t i = 0; i < files.size(); ++i) out[i].xxh3_128 = hash_planned(files[i]);
  };
  std::thread hasher_thread;
  bool hash_here = false;
  if (settings.checksums) {
    try {
      hasher_thread = start_thread(hash, "a checksum thread");
    } catch (const Error&) {
      hash_here = true;  // no thread to be had: hash in this one after writing
    }
  }
  try {
    std::vector<detail::SafetensorsFileJob> jobs;
    for (auto& f : files) {
      f.file = env.open_write(root / f.rel, io::OpenMode::CreateNew);
      jobs.push_back({f.file.get(), &f.layout, f.tensors});
    }
    detail::write_safetensors_files(jobs, {&env, settings.sync, nullptr});
    for (auto& f : files) f.file->close();
  } catch (...) {
    if (hasher_thread.joinable()) hasher_thread.join();
    throw;
  }
  if (hasher_thread.joinable()) hasher_thread.join();
  if (hash_here) hash();
  return out;
}

std::string join_rel(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

}  // namespace

std::vector<WrittenFile> write_tensor_set(io::Env& env, const fs::path& root,
                                          const std::string& single_dir,
                                          const std::string& sharded_dir, const std::string& base,
                                          std::span<const NamedTensor> tensors,
                                          uint64_t max_shard_bytes, const WriteSettings& settings) {
  const ShardPlan plan = plan_shards(tensors, max_shard_bytes, base);
  const std::string& dir = plan.sharded() ? sharded_dir : single_dir;
  if (!dir.empty()) env.create_dirs(root / dir);
  std::vector<PlannedFile> files;
  if (plan.shards.empty()) {  // no tensor at all: still one loadable (empty) file
    files.push_back({join_rel(dir, single_file_name(base)), tensors, plan_safetensors(tensors), {}});
  }
  // The members of a shard are contiguous in input order (the greedy planner).
  for (const auto& shard : plan.shards) {
    const auto part = tensors.subspan(shard.members.front(), shard.members.size());
    files.push_back({join_rel(dir, shard.file_name), part, plan_safetensors(part), {}});
  }
  std::vector<WrittenFile> written = write_planned(env, root, files, settings);
  if (plan.sharded()) {
    written.push_back(write_text_file(env, root, join_rel(dir, index_file_name(base)),
                                      render_shard_index(plan, tensors), settings));
  }
  return written;
}

}  // namespace ckptio::checkpoint
