#include "checkpoint_cli.h"

#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "ckptio/checkpoint_io.h"
#include "ckptio/checkpoint_layout.h"
#include "ckptio/error.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace fs = std::filesystem;

bool is_training_checkpoint(const fs::path& path) { return is_checkpoint_folder(path); }

int verify_training_checkpoint(const fs::path& path, bool full) {
  const VerifyReport r =
      verify_checkpoint(path, {.depth = full ? VerifyDepth::Full : VerifyDepth::Sizes});
  if (!r.has_manifest) {
    std::cout << printable(path.string())
              << ": no ckptio.manifest.json (written by another tool): checked that every part "
              << (full ? "parses and every tensor reads" : "parses") << "\n";
  }
  for (const auto& p : r.problems) std::cout << "FAIL " << printable(p) << "\n";
  if (!r.ok) {
    std::cout << printable(path.string()) << ": " << r.problems.size() << " problem(s)\n";
    return 1;
  }
  std::cout << fmt::format("{}: ok, {} files, {} bytes, {}\n", printable(path.string()), r.files,
                           r.bytes,
                           r.checksums_checked ? "sizes and xxh3-128 checksums match"
                           : r.has_manifest    ? "sizes match (--full also checks checksums)"
                                               : "no checksums to check");
  return 0;
}

int inspect_training_checkpoint(const fs::path& path, bool json) {
  // Everything but tensor data: running states and the non-tensor components load cheaply.
  std::string lr, sampler;
  CheckpointLoadOptions options;
  options.strict = false;
  LoadTargets targets;
  targets.lr_scheduler = &lr;
  targets.sampler = &sampler;
  const LoadResult r = load_checkpoint_folder(path, targets, options);
  const VerifyReport v = verify_checkpoint(path);
  const nlohmann::json extra = nlohmann::json::parse(r.extra);
  std::vector<std::pair<std::string, uint64_t>> files;
  for (auto it = fs::recursive_directory_iterator(path); it != fs::recursive_directory_iterator();
       ++it) {
    if (it->is_regular_file()) {
      files.emplace_back(fs::relative(it->path(), path).generic_string(), it->file_size());
    }
  }
  std::sort(files.begin(), files.end());
  nlohmann::json doc = {
      {"path", path.string()},
      {"kind", v.has_manifest ? "ckptio" : "foreign"},
      {"state", v.ok ? "ok" : "damaged"},
      {"running_states",
       {{"epoch", r.running.epoch},
        {"step", r.running.step},
        {"global_step", r.running.global_step},
        {"batch_size", r.running.batch_size},
        {"actual_update_step", r.running.actual_update_step}}},
      {"extra", extra},
      {"problems", v.problems}};
  if (!lr.empty()) doc["lr_scheduler"] = nlohmann::json::parse(lr);
  if (!sampler.empty()) doc["sampler"] = nlohmann::json::parse(sampler);
  uint64_t total = 0;
  nlohmann::json jfiles = nlohmann::json::array();
  for (const auto& [name, size] : files) {
    jfiles.push_back({{"name", name}, {"size", size}});
    total += size;
  }
  doc["files"] = jfiles;
  doc["total_bytes"] = total;
  if (json) {
    std::cout << doc.dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("training checkpoint {} ({})\n", printable(path.string()),
                           v.has_manifest ? "ckptio" : "written by another tool");
  std::cout << fmt::format(
      "  epoch {}  step {}  global_step {}  batch_size {}  actual_update_step {}\n",
      r.running.epoch, r.running.step, r.running.global_step, r.running.batch_size,
      r.running.actual_update_step);
  if (!extra.empty()) std::cout << "  extra " << printable(extra.dump()) << "\n";
  if (!lr.empty()) std::cout << "  lr_scheduler " << printable(lr) << "\n";
  if (!sampler.empty()) std::cout << "  sampler " << printable(sampler) << "\n";
  std::cout << "  files:\n";
  for (const auto& [name, size] : files) {
    std::cout << fmt::format("    {:>14}  {}\n", size, printable(name));
  }
  std::cout << fmt::format("  {} files, {} bytes, state {}\n", files.size(), total,
                           v.ok ? "ok" : "damaged");
  for (const auto& p : v.problems) std::cout << "  problem: " << printable(p) << "\n";
  std::cout << "  tensors: ckptio inspect " << printable((path / checkpoint::kModelDir).string())
            << " (or ema, optimizer)\n";
  return 0;
}

}  // namespace ckptio::cli
