// dist::save: every rank writes its pieces, the coordinator commits the folder.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "checkpoint/file_hash.h"
#include "checkpoint/manifest.h"
#include "checkpoint/tensor_file_writer.h"
#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "core/thread_start.h"
#include "dist/box.h"
#include "dist/plan.h"
#include "format/safetensors/file_writer.h"

namespace ckptio::dist {

namespace fs = std::filesystem;

namespace {

struct Piece {
  size_t tensor = 0;  // index into RankReport::tensors
  Box box;
  std::span<const std::byte> bytes;
};

// PyTorch's DCP_SHARDING_INFO value, spelled as its json.dumps spells it.
std::string sharding_info(const std::vector<const Piece*>& pieces, const detail::RankReport& r) {
  std::string out = "{";
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (i) out += ", ";
    out += nlohmann::json(r.tensors[pieces[i]->tensor].name).dump() + ": {\"saved_offsets\": [";
    const auto& offs = pieces[i]->box.offsets;
    for (size_t d = 0; d < offs.size(); ++d) out += (d ? ", " : "") + std::to_string(offs[d]);
    out += "]}";
  }
  return out + "}";
}

// Validates this rank's items, picks the pieces it writes and lists its tensors in `report`.
std::vector<Piece> plan_pieces(std::span<const SaveItem> items, int rank, int world,
                               detail::RankReport& report) {
  std::unordered_map<std::string, size_t> tensor_of;
  std::vector<bool> replicated;
  for (const SaveItem& item : items) {
    const ShardedTensor& t = item.tensor;
    detail::check_item(t, item.bytes.size(), "save item");
    const bool rep = t.placement == Placement::Replicated;
    auto [it, added] = tensor_of.try_emplace(t.name, report.tensors.size());
    if (added) {
      report.tensors.push_back({t.name, t.dtype, t.global_shape});
      replicated.push_back(rep);
      continue;
    }
    const detail::ReportTensor& known = report.tensors[it->second];
    if (known.dtype != t.dtype || known.shape != t.global_shape) {
      throw Error(ErrorCode::InvalidArgument, "save item '" + printable(t.name) +
                                                  "' is listed with two dtypes or global shapes");
    }
    if (rep || replicated[it->second]) {
      throw Error(ErrorCode::InvalidArgument,
                  "save item '" + printable(t.name) +
                      "' is listed twice and replicated (a replicated tensor is listed once)");
    }
  }
  std::vector<std::pair<std::string, uint64_t>> rep_list;
  for (const SaveItem& item : items) {
    if (item.tensor.placement == Placement::Replicated) {
      rep_list.emplace_back(item.tensor.name, item.bytes.size());
    }
  }
  const std::vector<int> owners = detail::assign_replicated(rep_list, world);
  std::unordered_map<std::string, int> owner;
  for (size_t i = 0; i < rep_list.size(); ++i) owner.emplace(rep_list[i].first, owners[i]);

  std::vector<Piece> pieces;
  for (const SaveItem& item : items) {
    const ShardedTensor& t = item.tensor;
    if (t.placement == Placement::Replicated && owner.at(t.name) != rank) continue;
    for (detail::Region& r : detail::regions_of(t)) {
      pieces.push_back({tensor_of.at(t.name), std::move(r.box), item.bytes.subspan(r.byte_offset, r.nbytes)});
    }
  }
  return pieces;
}

// One file of this rank: its pieces (the k-th piece of each tensor: a safetensors file holds a
// name once), their tensors and the layout.
struct RankFile {
  std::string name;
  std::vector<const Piece*> pieces;
  std::vector<NamedTensor> tensors;
  SafetensorsLayout layout;
  std::unique_ptr<io::WritableFile> file;
  std::string xxh3_128;
};

// The file's bytes in order (the header, then the tensors in data order), hashed from memory.
std::string hash_file(const RankFile& f) {
  checkpoint::Xxh3Hasher hasher;
  hasher.update(std::as_bytes(std::span(f.layout.header)));
  for (size_t i : f.layout.order) hasher.update(f.tensors[i].view.bytes);
  return hasher.hex();
}

// Writes this rank's files into `temp` and fills report.files / report.chunks. Like CheckpointIO's
// tensor sets: every file created new in the (private, uncommitted) temp folder, all of them
// through one safetensors writer (one set of threads, the fsyncs in parallel), checksums computed
// on another thread from the same memory meanwhile, and no per-file rename or folder fsync: the
// folder commit publishes and syncs the folder once.
void write_pieces(const std::vector<Piece>& pieces, int rank, const fs::path& temp,
                  const SaveOptions& options, io::Env& env, detail::RankReport& report,
                  SaveResult& result) {
  std::vector<RankFile> files;
  std::vector<size_t> seen(report.tensors.size(), 0);
  for (const Piece& p : pieces) {
    const size_t k = seen[p.tensor]++;
    if (files.size() <= k) files.resize(k + 1);
    files[k].pieces.push_back(&p);
  }
  for (size_t k = 0; k < files.size(); ++k) {
    RankFile& f = files[k];
    f.name = detail::rank_file_name(rank, k + 1, files.size());
    for (const Piece* p : f.pieces) {
      const detail::ReportTensor& t = report.tensors[p->tensor];
      f.tensors.push_back({t.name, TensorView{t.dtype, p->box.shape, p->bytes}});
    }
    SafetensorsWriteOptions wo;
    wo.metadata = Metadata{{"DCP_SHARDING_INFO", sharding_info(f.pieces, report)},
                           {"DCP_VERSION", "1.0"},
                           {"format", "pt"}};
    f.layout = plan_safetensors(f.tensors, wo);
  }

  auto hash = [&files] {
    for (RankFile& f : files) f.xxh3_128 = hash_file(f);
  };
  std::thread hasher;
  bool hash_here = false;
  if (options.checksums) {
    try {
      hasher = start_thread(hash, "a checksum thread");
    } catch (const Error&) {
      hash_here = true;  // no thread to be had: hash on this one after writing
    }
  }
  try {
    std::vector<ckptio::detail::SafetensorsFileJob> jobs;
    for (RankFile& f : files) {
      f.file = env.open_write(temp / f.name, io::OpenMode::CreateNew);
      jobs.push_back({f.file.get(), &f.layout, f.tensors});
    }
    ckptio::detail::write_safetensors_files(jobs, {&env, options.sync, options.writer});
    for (RankFile& f : files) f.file->close();
  } catch (...) {
    if (hasher.joinable()) hasher.join();
    throw;
  }
  if (hasher.joinable()) hasher.join();
  if (hash_here) hash();

  for (RankFile& f : files) {
    const auto file_index = static_cast<uint32_t>(report.files.size());
    report.files.push_back({f.name, f.layout.file_size, std::move(f.xxh3_128)});
    for (size_t e = 0; e < f.layout.entries.size(); ++e) {
      const Piece& p = *f.pieces[f.layout.order[e]];
      const uint64_t begin = f.layout.header.size() + f.layout.entries[e].begin;
      report.chunks.push_back({static_cast<uint32_t>(p.tensor), file_index, p.box, begin,
                               begin + f.layout.entries[e].nbytes()});
    }
    result.files.push_back(f.name);
    result.bytes_written += f.layout.file_size;
  }
}

// Rank 0: the global index and the manifest, last, then the folder's commit.
void commit(io::AtomicDir& folder, const std::vector<std::string>& raw_reports,
            const SaveOptions& options, io::Env& env) {
  std::vector<detail::RankReport> reports;
  reports.reserve(raw_reports.size());
  for (const std::string& r : raw_reports) reports.push_back(detail::report_from_bytes(r));
  checkpoint::Manifest manifest;
  for (const auto& r : reports) {
    for (const auto& f : r.files) manifest.files[f.name] = {f.size, f.xxh3_128};
  }
  const GlobalIndex index = detail::merge_reports(std::move(reports));
  manifest.epoch = options.epoch;
  manifest.global_step = options.global_step;
  manifest.sequence = options.sequence;
  // Plain new files in the uncommitted folder, fsynced; the commit syncs the folder.
  const checkpoint::WriteSettings settings{options.sync, options.checksums};
  const checkpoint::WrittenFile index_file = checkpoint::write_text_file(
      env, folder.temp_path(), std::string(kIndexName), index_to_json(index), settings);
  manifest.files[index_file.rel] = {index_file.size, index_file.xxh3_128};
  checkpoint::write_text_file(env, folder.temp_path(), std::string(checkpoint::kManifestName),
                              checkpoint::manifest_to_json(manifest), settings);
  // Each file was fsynced as it was written (when options.sync); the folders are synced here.
  folder.commit({.if_exists = options.replace ? io::IfExists::Replace : io::IfExists::Fail,
                 .sync_files = false,
                 .sync = options.sync});
  // Temp folders of earlier saves of this name that died before their commit (a killed job that
  // is retried) would stay forever; only this name's are removed, other names may be saves in
  // progress. Before the last agreement, so a save that returns on any rank has removed them.
  try {
    (void)io::remove_temp_leftovers(env, folder.final_path().parent_path(),
                                    folder.final_path().filename().string());
  } catch (const Error&) {
    // The checkpoint is committed; a leftover that cannot go now goes with the next save of it.
  }
}

}  // namespace

SaveResult save(Communicator& comm, const fs::path& dir, std::span<const SaveItem> items,
                const SaveOptions& options) {
  io::Env& env = options.env ? *options.env : io::Env::posix();
  const int rank = comm.rank();
  const int world = comm.size();
  const std::string where = "saving distributed checkpoint '" + dir.string() + "'";

  std::unique_ptr<io::AtomicDir> folder;  // the coordinator's; removed on failure
  std::exception_ptr error;
  if (rank == 0) {
    try {
      if (env.stat(dir).exists && !options.replace) {
        throw Error(ErrorCode::AlreadyExists, "'" + dir.string() + "' already exists");
      }
      folder = std::make_unique<io::AtomicDir>(env, dir);
    } catch (...) {
      error = std::current_exception();
    }
  }
  agree(comm, where + ": preparing the folder", error);
  const fs::path temp = comm.broadcast(rank == 0 ? folder->temp_path().string() : "", 0);

  SaveResult result;
  result.path = dir;
  detail::RankReport report;
  try {
    const std::vector<Piece> pieces = plan_pieces(items, rank, world, report);
    write_pieces(pieces, rank, temp, options, env, report, result);
  } catch (...) {
    error = std::current_exception();
  }
  agree(comm, where + ": writing shards", error);

  const std::vector<std::string> reports = comm.gather(detail::report_to_bytes(report), 0);
  if (rank == 0) {
    try {
      commit(*folder, reports, options, env);
    } catch (...) {
      error = std::current_exception();
    }
  }
  agree(comm, where + ": committing", error);
  return result;
}

}  // namespace ckptio::dist
