// Power cuts during Hub downloads, at every operation boundary, through the power-cut model (data
// not fsynced is lost, directory entries not fsynced through their folder are rolled back). The
// script downloads a sharded model (an index and two LFS shards) at "main" into an empty cache,
// then another commit of it at "v2". After each cut, offline resolution of each revision either
// fails or gives exactly the files of that commit, and succeeds once its download has returned;
// every final blob holds the bytes its name hashes to.
//
// The download locks (.locks/) are taken through the Env and are not operations (they need not
// survive); the snapshot symlinks are created through the Env under a temp name and renamed, and
// survive only once their folder is synced, their target with them.
#include <gtest/gtest.h>

#include <memory>
#include <sstream>

#include "ckptio/error.h"
#include "ckptio/hub.h"
#include "ckptio/power_cut_env.h"
#include "hub/fake_hub.h"
#include "support/power_cut_root.h"

namespace ckptio::hub {
namespace {

using ckptio::testing::CleanHubEnv;
using ckptio::testing::commit_id;
using ckptio::testing::FakeHub;
using ckptio::testing::git_sha1_hex;
using ckptio::testing::random_bytes;
using ckptio::testing::read_file;
using ckptio::testing::sha256_hex;
using ckptio::testing::TempDir;
using io::PowerCutEnv;
using io::PowerCutOptions;
using Names = PowerCutOptions::Names;
using Data = PowerCutOptions::Data;

constexpr const char* kRepo = "org/model";

struct Revision {
  std::string name;    // what the script asks for
  std::string commit;  // what the server resolves it to
  std::map<std::string, std::string> files;
};

class HubPowerCut : public ::testing::Test {
 protected:
  void SetUp() override {
    clean_env_ = std::make_unique<CleanHubEnv>(tmp_ / "home");
    hub_ = std::make_unique<FakeHub>(tmp_ / "server");
    for (int r = 0; r < 2; ++r) {
      Revision rev;
      rev.name = r == 0 ? "main" : "v2";
      rev.commit = commit_id(r == 0 ? "c1" : "c2");
      rev.files["model-00001-of-00002.safetensors"] = random_bytes(3000 + 100 * r, 10 + r);
      rev.files["model-00002-of-00002.safetensors"] = random_bytes(2000 + 100 * r, 20 + r);
      rev.files["model.safetensors.index.json"] =
          R"({"metadata": {"rev": )" + std::to_string(r) +
          R"(}, "weight_map": {"a": "model-00001-of-00002.safetensors", )"
          R"("b": "model-00002-of-00002.safetensors"}})";
      for (const auto& [path, content] : rev.files) {
        hub_->add_file(kRepo, rev.commit, path, content, /*lfs=*/path.ends_with(".safetensors"));
      }
      hub_->set_ref(kRepo, rev.name, rev.commit);
      revisions_.push_back(std::move(rev));
    }
    hub_->start();
  }

  HubOptions options(const fs::path& cache, io::Env* env, const std::string& revision) const {
    HubOptions o;
    o.cache_dir = cache;
    o.endpoint = hub_->endpoint();
    o.revision = revision;
    o.progress = ProgressMode::Never;
    o.max_parallel_downloads = 1;  // one op order from run to run
    o.max_attempts = 1;            // an I/O error after the cut is final anyway
    o.retry_base_delay = std::chrono::milliseconds(1);
    o.metadata_timeout = std::chrono::seconds(10);
    o.stall_timeout = std::chrono::seconds(10);
    o.env = env;
    if (env == nullptr) o.offline = true;  // the checks read what survived, not the server
    return o;
  }

  size_t run_script(io::Env& env, const fs::path& cache) {
    size_t returned = 0;
    try {
      for (const Revision& rev : revisions_) {
        download_model(kRepo, "", options(cache, &env, rev.name));
        ++returned;
      }
    } catch (const Error&) {
    }
    return returned;
  }

  std::string check_survivors(const fs::path& cache, size_t returned) {
    std::ostringstream problems;
    // No final blob with wrong bytes (torn) is ever visible.
    const fs::path blobs = cache / "models--org--model" / "blobs";
    if (fs::exists(blobs)) {
      for (const auto& e : fs::directory_iterator(blobs)) {
        const std::string name = e.path().filename().string();
        if (name.find('.') != std::string::npos) continue;  // .incomplete downloads
        const std::string bytes = read_file(e.path());
        const std::string hash = name.size() == 64 ? sha256_hex(bytes) : git_sha1_hex(bytes);
        if (hash != name) problems << "blob " << name << " holds " << bytes.size() << " other bytes; ";
      }
    }
    for (size_t r = 0; r < revisions_.size(); ++r) {
      const Revision& rev = revisions_[r];
      try {
        const fs::path dir = download_model(kRepo, "", options(cache, nullptr, rev.name));
        for (const auto& [path, content] : rev.files) {
          if (!fs::exists(dir / path) || read_file(dir / path) != content) {
            problems << rev.name << ": " << path << " is not what the Hub served; ";
          }
        }
      } catch (const Error& e) {
        if (r < returned) {
          problems << rev.name << " is gone although its download returned: " << e.what() << "; ";
        }
      }
    }
    return problems.str();
  }

  void cut_at_every_boundary(const PowerCutOptions& cut) {
    uint64_t total = 0;
    {
      testing::PowerCutRoot root;
      PowerCutEnv env(root.path());
      ASSERT_EQ(run_script(env, root / "cache"), revisions_.size());
      total = env.ops();
      ASSERT_EQ(check_survivors(root / "cache", revisions_.size()), "");
    }
    ASSERT_GT(total, 20u);
    RecordProperty("boundaries", std::to_string(total + 1));
    size_t failures = 0;
    for (uint64_t n = 0; n <= total; ++n) {
      testing::PowerCutRoot root;
      PowerCutEnv env(root.path());
      env.cut_after(n);
      const size_t returned = run_script(env, root / "cache");
      env.power_cut(cut);
      const std::string problems = check_survivors(root / "cache", returned);
      if (!problems.empty() && ++failures <= 5) {
        ADD_FAILURE() << "power cut after op " << n << " of " << total << " (" << returned
                      << " downloads returned): " << problems;
      }
    }
    EXPECT_EQ(failures, 0u) << "of " << total + 1 << " boundaries";
  }

  TempDir tmp_;
  std::unique_ptr<CleanHubEnv> clean_env_;
  std::unique_ptr<FakeHub> hub_;
  std::vector<Revision> revisions_;
};

TEST_F(HubPowerCut, EveryBoundaryUnsyncedNamesRolledBack) {
  cut_at_every_boundary({Names::Rollback, Data::Drop});
}

TEST_F(HubPowerCut, EveryBoundaryNamesKeptDataLost) {
  cut_at_every_boundary({Names::Keep, Data::Drop});
}

TEST_F(HubPowerCut, EveryBoundaryTornUnsyncedData) {
  cut_at_every_boundary({Names::Rollback, Data::TornPrefix, 3});
}

}  // namespace
}  // namespace ckptio::hub
