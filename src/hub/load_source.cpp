// hub::resolver(): what lets load_checkpoint, convert and diff read "hf://" sources. It lives in
// the Hub library so that the loaders (ckptio::load) link without libcurl and OpenSSL.
#include "ckptio/error.h"
#include "ckptio/hub.h"

namespace ckptio::hub {

HubResolver resolver(const HubOptions& options) {
  return [options](const std::string& spec, io::Env& env) {
    const std::optional<HubSpec> parsed = parse_hub_spec(spec);
    if (!parsed) {
      throw Error(ErrorCode::InvalidArgument,
                  "'" + spec + "' is not a Hub source (expected hf://org/name[@revision][/path])");
    }
    HubOptions o = options;
    if (o.env == nullptr) o.env = &env;
    HubLocalSource local;
    local.path = *resolve_hub_source(spec, o);
    // Snapshot files are symlinks into the repo's blobs/; copies in local_dir are plain files.
    if (o.local_dir.empty()) local.allowed_root = repo_cache_dir(parsed->repo_id, o);
    return local;
  };
}

}  // namespace ckptio::hub
