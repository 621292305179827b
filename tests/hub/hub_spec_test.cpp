// Spec parsing, name rules, URL encoding and the environment resolution shared with
// huggingface_hub. No network.
#include <gtest/gtest.h>

#include <cstdio>

#include "ckptio/hub.h"
#include "hub/fake_hub.h"
#include "hub/names.h"
#include "hub/progress.h"
#include "hub/settings.h"
#include "hub/url.h"

namespace ckptio::hub {
namespace {

using ckptio::testing::CleanHubEnv;
using ckptio::testing::ScopedEnv;
using ckptio::testing::TempDir;

TEST(HubSpec, ParsesRepoFileAndRevision) {
  auto s = parse_hub_spec("org/name");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->repo_id, "org/name");
  EXPECT_EQ(s->path, "");
  EXPECT_EQ(s->revision, "");

  s = parse_hub_spec("hpcai-tech/OpenSora-STDiT-v3/model.safetensors");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->repo_id, "hpcai-tech/OpenSora-STDiT-v3");
  EXPECT_EQ(s->path, "model.safetensors");

  s = parse_hub_spec("org/name/unet/sub/diffusion_pytorch_model.safetensors");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->path, "unet/sub/diffusion_pytorch_model.safetensors");

  s = parse_hub_spec("org/name@v1.0/model.safetensors");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->revision, "v1.0");
  EXPECT_EQ(s->path, "model.safetensors");

  s = parse_hub_spec("org/name@refs/pr/3");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->revision, "refs/pr/3");
  EXPECT_EQ(s->path, "");

  s = parse_hub_spec("org/name@refs/pr/3/model.safetensors");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->revision, "refs/pr/3");
  EXPECT_EQ(s->path, "model.safetensors");

  s = parse_hub_spec("hf://org/name@feature%2Fx/a/b.safetensors");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->revision, "feature/x");
  EXPECT_EQ(s->path, "a/b.safetensors");
}

TEST(HubSpec, RejectsLocalLookingAndInvalidNames) {
  for (const char* bad :
       {"", "model.safetensors", "/abs/org/name", "./org/name", "../org/name", "~/org/name",
        "org//name", "org/name/", "org/name/../../etc/passwd", "org/name/a//b.safetensors",
        "org/na--me", "org/-name", "org/name.", "org/na..me", "or g/name", "org/name@",
        "org/name@../x/model.safetensors", "org/name/a\\b.safetensors"}) {
    EXPECT_FALSE(looks_like_hub_spec(bad)) << bad;
  }
  EXPECT_FALSE(looks_like_hub_spec("org/" + std::string(97, 'a')));
  EXPECT_TRUE(looks_like_hub_spec("org/" + std::string(96, 'a')));
  EXPECT_TRUE(looks_like_hub_spec("gpt2-org/gpt2_small.v2"));
}

TEST(HubSpec, RepoFolderName) {
  EXPECT_EQ(repo_folder_name("julien-c/EsperBERTo-small"), "models--julien-c--EsperBERTo-small");
  HubOptions o;
  o.cache_dir = "/c";
  EXPECT_EQ(repo_cache_dir("org/name", o), fs::path("/c/models--org--name"));
}

TEST(HubUrl, EncodesLikePythonQuote) {
  EXPECT_EQ(percent_encode("refs/pr/1", false), "refs%2Fpr%2F1");
  EXPECT_EQ(percent_encode("main", false), "main");
  EXPECT_EQ(percent_encode("sub dir/a+b~_.-.safetensors", true), "sub%20dir/a%2Bb~_.-.safetensors");
  EXPECT_EQ(percent_decode("refs%2Fpr%2F1"), "refs/pr/1");
  EXPECT_EQ(percent_decode("bad%zz%4"), "bad%zz%4");
}

TEST(HubUrl, OriginsDecideWhereTheTokenGoes) {
  EXPECT_EQ(url_origin("https://huggingface.co/org/name/resolve/main/x"), "https://huggingface.co:443");
  EXPECT_EQ(url_origin("HTTP://User@Host:8080/p?q"), "http://host:8080");
  EXPECT_NE(url_origin("http://127.0.0.1:1000/a"), url_origin("http://127.0.0.1:1001/a"));
  EXPECT_EQ(url_origin("no-scheme"), "");
  EXPECT_TRUE(is_relative_location("/org/new/resolve/main/x"));
  EXPECT_TRUE(is_relative_location("../x"));
  EXPECT_FALSE(is_relative_location("https://cdn/x"));
  EXPECT_FALSE(is_relative_location("//cdn/x"));
}

TEST(HubNames, EtagsAndHashes) {
  EXPECT_EQ(normalize_etag("W/\"abc\""), "abc");
  EXPECT_EQ(normalize_etag("\"abc\""), "abc");
  EXPECT_EQ(normalize_etag("abc"), "abc");
  EXPECT_TRUE(is_safe_etag("403450e234d65943a7dcf7e05a771ce3c92faa84dd07db4ac20f592037a1e4bd"));
  EXPECT_FALSE(is_safe_etag("../../etc/passwd"));
  EXPECT_FALSE(is_safe_etag("a/b"));
  EXPECT_FALSE(is_safe_etag(""));
  EXPECT_TRUE(is_commit_hash("2439f60ef33a0d46d85da5001d52aeda5b00ce9f"));
  EXPECT_FALSE(is_commit_hash("2439F60EF33A0D46D85DA5001D52AEDA5B00CE9F"));
  EXPECT_FALSE(is_commit_hash("main"));
  EXPECT_TRUE(is_sha256_hex(std::string(64, 'a')));
  EXPECT_FALSE(is_sha256_hex(std::string(40, 'a')));
}

TEST(HubSettings, CacheDirPrecedence) {
  TempDir tmp;
  CleanHubEnv clean(tmp / "home");
  EXPECT_EQ(resolve_cache_dir({}), tmp / "home" / "hub");
  {
    ScopedEnv no_home("HF_HOME", nullptr);
    ScopedEnv xdg("XDG_CACHE_HOME", (tmp / "xdg").c_str());
    EXPECT_EQ(resolve_cache_dir({}), tmp / "xdg" / "huggingface" / "hub");
    ScopedEnv no_xdg("XDG_CACHE_HOME", nullptr);
    ScopedEnv home("HOME", tmp.path().c_str());
    EXPECT_EQ(resolve_cache_dir({}), tmp / ".cache" / "huggingface" / "hub");
  }
  ScopedEnv legacy("HUGGINGFACE_HUB_CACHE", (tmp / "legacy").c_str());
  EXPECT_EQ(resolve_cache_dir({}), tmp / "legacy");
  ScopedEnv modern("HF_HUB_CACHE", (tmp / "modern").c_str());
  EXPECT_EQ(resolve_cache_dir({}), tmp / "modern");
  HubOptions o;
  o.cache_dir = tmp / "explicit";
  EXPECT_EQ(resolve_cache_dir(o), tmp / "explicit");
}

TEST(HubSettings, TokenPrecedence) {
  TempDir tmp;
  CleanHubEnv clean(tmp / "home");
  EXPECT_FALSE(resolve_settings({}).token);
  fs::create_directories(tmp / "home");
  ckptio::testing::write_file(tmp / "home" / "token", "  file-token\n");
  EXPECT_EQ(resolve_settings({}).token, "file-token");
  ckptio::testing::write_file(tmp / "other-token", "path-token");
  {
    ScopedEnv path("HF_TOKEN_PATH", (tmp / "other-token").c_str());
    EXPECT_EQ(resolve_settings({}).token, "path-token");
  }
  ScopedEnv legacy("HUGGING_FACE_HUB_TOKEN", "legacy-token");
  EXPECT_EQ(resolve_settings({}).token, "legacy-token");
  ScopedEnv modern("HF_TOKEN", "modern-token");
  EXPECT_EQ(resolve_settings({}).token, "modern-token");
  HubOptions o;
  o.token = "explicit";
  EXPECT_EQ(resolve_settings(o).token, "explicit");
}

TEST(HubSettings, OfflineAndEndpointFromEnvironment) {
  TempDir tmp;
  CleanHubEnv clean(tmp / "home");
  Settings s = resolve_settings({});
  EXPECT_FALSE(s.offline);
  EXPECT_EQ(s.endpoint, "https://huggingface.co");
  {
    ScopedEnv e("HF_HUB_OFFLINE", "1");
    EXPECT_TRUE(resolve_settings({}).offline);
  }
  {
    ScopedEnv e("TRANSFORMERS_OFFLINE", "yes");
    EXPECT_TRUE(resolve_settings({}).offline);
    // As in huggingface_hub, a set HF_HUB_OFFLINE wins over TRANSFORMERS_OFFLINE.
    ScopedEnv f("HF_HUB_OFFLINE", "0");
    EXPECT_FALSE(resolve_settings({}).offline);
  }
  ScopedEnv ep("HF_ENDPOINT", "http://mirror.example:8080//");
  EXPECT_EQ(resolve_settings({}).endpoint, "http://mirror.example:8080");
  ScopedEnv t("HF_HUB_ETAG_TIMEOUT", "2.5");
  EXPECT_EQ(resolve_settings({}).metadata_timeout, std::chrono::milliseconds(2500));
}

TEST(HubSettings, ProgressBarsOnlyWhenWanted) {
  TempDir tmp;
  CleanHubEnv clean(tmp / "home");
  HubOptions o;
  o.progress = ProgressMode::Never;
  EXPECT_FALSE(resolve_settings(o).progress);
  o.progress = ProgressMode::Always;
  EXPECT_TRUE(resolve_settings(o).progress);
  o.progress = ProgressMode::Auto;  // the test's stderr is not a terminal
  if (::isatty(STDERR_FILENO) == 0) {
    EXPECT_FALSE(resolve_settings(o).progress);
  }
  ScopedEnv off("HF_HUB_DISABLE_PROGRESS_BARS", "1");
  EXPECT_FALSE(resolve_settings(o).progress);
}

TEST(HubProgress, DrawsOnlyWhenEnabled) {
  TempDir tmp;
  for (const bool enabled : {true, false}) {
    std::FILE* f = std::fopen((tmp / "out").c_str(), "w+");
    ASSERT_NE(f, nullptr);
    {
      Progress p(enabled, "org/name", f);
      p.add_total(2'000'000);
      p.advance(1'000'000);
      p.advance(1'000'000);
      p.finish();
    }
    std::fclose(f);
    const std::string out = ckptio::testing::read_file(tmp / "out");
    if (enabled) {
      EXPECT_NE(out.find("org/name: 100%"), std::string::npos) << out;
      EXPECT_NE(out.find("2.0/2.0 MB"), std::string::npos) << out;
      EXPECT_EQ(out.back(), '\n');
    } else {
      EXPECT_EQ(out, "");
    }
  }
}

}  // namespace
}  // namespace ckptio::hub
