// save_sharded: shards to temp names through the one safetensors writer, fsync, rename, index
// last (io::write_file_atomic), stale files after.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/sharded.h"
#include "core/executor.h"
#include "format/safetensors/file_writer.h"
#include "format/sharded/stale_files.h"

namespace ckptio {
namespace {

struct PendingShard {
  std::string name;
  std::filesystem::path temp;
  std::vector<NamedTensor> members;
  SafetensorsLayout layout;
  std::unique_ptr<io::WritableFile> file;
};

}  // namespace

ShardedWriteResult save_sharded(const std::filesystem::path& dir,
                                std::span<const NamedTensor> tensors,
                                const ShardedWriteOptions& options) {
  io::Env& env = options.env ? *options.env : io::Env::posix();
  if (options.metadata.count("total_size")) {
    throw Error(ErrorCode::InvalidArgument,
                "index metadata key 'total_size' is reserved (ckptio writes it)");
  }
  ShardPlan plan = plan_shards(tensors, options.max_shard_size, options.base_name);
  if (plan.shards.empty()) {  // an empty state is still a loadable file
    plan.shards.push_back(ShardPlan::Shard{single_file_name(options.base_name), {}, 0});
  }
  const bool sharded = plan.sharded();

  std::vector<PendingShard> pending(plan.shards.size());
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    PendingShard& p = pending[s];
    p.name = plan.shards[s].file_name;
    for (size_t m : plan.shards[s].members) p.members.push_back(tensors[m]);
    SafetensorsWriteOptions wo;
    Metadata file_metadata{{"format", "pt"}};
    if (!sharded) {
      for (const auto& [k, v] : options.metadata) file_metadata[k] = v;
    }
    wo.metadata = std::move(file_metadata);
    p.layout = plan_safetensors(p.members, wo);
  }
  const std::string index_text = sharded ? render_shard_index(plan, tensors, options.metadata) : "";

  if (options.sync) {
    io::create_dirs_synced(env, dir);  // a new folder must survive a power cut with its files
  } else {
    env.create_dirs(dir);
  }
  const std::vector<std::string> before = env.list_dir(dir);
  const std::set<std::string> existing(before.begin(), before.end());

  // 1. Every shard under a temp name, filled by the one safetensors writer (and fsynced).
  auto remove_temps = [&] {
    for (auto& p : pending) {
      p.file.reset();
      if (p.temp.empty()) continue;
      try {
        env.remove(p.temp);
      } catch (...) {
        // The first error matters more; temp names are cleaned by the next save.
      }
    }
  };
  try {
    std::vector<detail::SafetensorsFileJob> jobs;
    for (auto& p : pending) {
      p.temp = io::temp_path_for(dir / p.name);
      p.file = env.open_write(p.temp, io::OpenMode::CreateNew);
      jobs.push_back({p.file.get(), &p.layout, p.members});
    }
    io::AsyncWriterOptions tuning;
    tuning.threads = detail::thread_count(
        options.threads, std::max<size_t>(plan.total_size / tuning.chunk_bytes, 1) + pending.size());
    detail::write_safetensors_files(jobs, {&env, options.sync, &tuning});
    for (auto& p : pending) p.file->close();
  } catch (const Error& e) {
    remove_temps();
    throw e.annotate("saving sharded checkpoint to '" + dir.string() + "'");
  } catch (...) {
    remove_temps();
    throw;
  }

  // 2. If a new shard would replace a file the current index names, retire that index first: a
  //    reader then sees no index (an error) rather than a mix of old and new shards.
  const std::string index_name = index_file_name(options.base_name);
  bool index_removed = false;
  if (existing.count(index_name)) {
    for (const auto& p : pending) {
      if (existing.count(p.name)) {
        try {
          env.remove(dir / index_name);
          if (options.sync) env.sync_dir(dir);
        } catch (...) {
          remove_temps();
          throw;
        }
        index_removed = true;
        break;
      }
    }
  }

  // 3. Shards into place, then the index: the commit point of a sharded save.
  ShardedWriteResult result;
  result.total_size = plan.total_size;
  try {
    for (auto& p : pending) {
      env.rename(p.temp, dir / p.name);
      p.temp.clear();
      result.shards.push_back({p.name, p.layout.file_size});
    }
    if (options.sync) env.sync_dir(dir);
    if (sharded) {
      io::write_file_atomic(env, dir / index_name, index_text, {.sync = options.sync});
      result.index = ShardedWriteResult::File{index_name, index_text.size()};
    }
  } catch (const Error& e) {
    remove_temps();
    throw e.annotate("saving sharded checkpoint to '" + dir.string() + "'");
  }

  // 4. Only now: files of earlier saves with this base name that the new save does not name.
  std::set<std::string> keep;
  for (const auto& p : pending) keep.insert(p.name);
  if (sharded) keep.insert(index_name);
  std::vector<std::string> stale;
  for (const auto& name : env.list_dir(dir)) {
    if (keep.count(name)) continue;
    if (detail::is_shard_family_name(name, options.base_name) ||
        detail::is_shard_family_temp_name(name, options.base_name)) {
      stale.push_back(name);
    }
  }
  // The index goes first so that no reader follows it to a shard that is gone.
  std::stable_partition(stale.begin(), stale.end(),
                        [&](const std::string& n) { return n == index_name; });
  for (const auto& name : stale) {
    env.remove(dir / name);
    if (!io::is_temp_name(name)) result.removed.push_back(name);
  }
  if (!stale.empty() && options.sync) env.sync_dir(dir);
  if (index_removed && !sharded) result.removed.push_back(index_name);
  return result;
}

}  // namespace ckptio
