// ckptio download REPO [FILES...]: fetch a model (or the named files) from the Hugging Face Hub
// into the shared cache and print the local path(s), one per line.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "ckptio/error.h"
#include "ckptio/hub.h"
#include "command.h"

namespace ckptio::cli {

namespace {

struct DownloadArgs {
  std::string repo;
  std::vector<std::string> files;
  std::string revision;
  std::string local_dir;
  std::string cache_dir;
  bool offline = false;
  bool quiet = false;
};

int download(const DownloadArgs& args) {
  // REPO may carry "@revision" and even a path, like every other Hub source ckptio accepts.
  const auto spec = hub::parse_hub_spec(args.repo);
  if (!spec) {
    throw Error(ErrorCode::InvalidArgument,
                "'" + args.repo + "' is not a Hub repo (expected org/name[@revision][/path])");
  }
  hub::HubOptions options;
  options.revision = !args.revision.empty() ? args.revision : spec->revision;
  options.local_dir = args.local_dir;
  options.cache_dir = args.cache_dir;
  options.offline = args.offline;
  options.progress = args.quiet ? hub::ProgressMode::Never : hub::ProgressMode::Auto;

  std::vector<std::string> files = args.files;
  if (!spec->path.empty()) files.insert(files.begin(), spec->path);
  if (files.empty()) {
    std::cout << hub::download_model(spec->repo_id, "", options).string() << "\n";
    return 0;
  }
  for (const std::string& file : files) {
    std::cout << hub::download_file(spec->repo_id, file, options).string() << "\n";
  }
  return 0;
}

}  // namespace

void register_download(Commands& commands) {
  Command& cmd = add_command(
      commands, "download",
      "Download a model (index and shards, or model.safetensors) or named files from the Hugging "
      "Face Hub into the shared cache; prints the local path");
  auto args = std::make_shared<DownloadArgs>();
  cmd.positional("REPO", args->repo, "org/name, optionally @revision");
  cmd.positionals("FILES", args->files, "paths inside the repo (default: the model weights)");
  cmd.option("--revision", args->revision, "branch, tag, commit or refs/pr/N (default main)");
  cmd.option("--local-dir", args->local_dir, "also copy the files into this folder");
  cmd.option("--cache-dir", args->cache_dir, "cache folder (default: HF_HUB_CACHE, ...)");
  cmd.flag("--offline", args->offline, "use only the cache (also HF_HUB_OFFLINE=1)");
  cmd.flag("--quiet,-q", args->quiet, "no progress bar");
  cmd.action([args] { return download(*args); });
}

}  // namespace ckptio::cli
