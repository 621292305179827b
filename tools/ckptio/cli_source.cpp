#include "cli_source.h"

#include "ckptio/checkpoint_layout.h"
#include "ckptio/error.h"
#include "ckptio/hub.h"

namespace ckptio::cli {

namespace fs = std::filesystem;

CliSource resolve_cli_source(const std::string& spec) {
  CliSource s;
  s.spec = spec;
  if (spec.starts_with("hf://")) {
    const auto parsed = hub::parse_hub_spec(spec);
    if (!parsed) {
      throw Error(ErrorCode::InvalidArgument,
                  "'" + spec + "' is not a Hub source (expected hf://org/name[@revision][/path])");
    }
    try {
      s.path = *hub::resolve_hub_source(spec);
    } catch (const Error& e) {
      throw e.annotate("'" + spec + "'");
    }
    s.options.allowed_root = hub::repo_cache_dir(parsed->repo_id);
    return s;
  }
  s.path = spec;
  std::error_code ec;
  if (fs::exists(s.path, ec)) return s;
  const std::string leaf = s.path.filename().string();
  if ((leaf == checkpoint::kModelDir || leaf == checkpoint::kEmaName ||
       leaf == checkpoint::kOptimizerDir) &&
      fs::is_directory(s.path.parent_path(), ec)) {
    s.component = true;  // resolve_checkpoint_source says whether CKPT really has it
    return s;
  }
  throw Error(ErrorCode::NotFound,
              "'" + spec + "' does not exist (a Hugging Face Hub source is written hf://org/name)");
}

}  // namespace ckptio::cli
