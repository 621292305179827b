// Environment resolution for the Hub client.
#include "hub/settings.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "ckptio/error.h"

namespace ckptio::hub {
namespace {

std::optional<std::string> env_value(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

fs::path expand_user(const std::string& path) {
  if (path == "~" || path.starts_with("~/")) {
    if (const auto home = env_value("HOME")) return fs::path(*home) / path.substr(std::min<size_t>(2, path.size()));
  }
  return path;
}

fs::path hf_home() {
  if (const auto v = env_value("HF_HOME")) return expand_user(*v);
  if (const auto xdg = env_value("XDG_CACHE_HOME")) return expand_user(*xdg) / "huggingface";
  return expand_user("~/.cache") / "huggingface";
}

std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::optional<std::string> token_from_environment(io::Env& env) {
  for (const char* name : {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}) {
    if (const auto v = env_value(name)) {
      std::string t = trim(*v);
      if (!t.empty()) return t;
    }
  }
  const fs::path file =
      env_value("HF_TOKEN_PATH") ? expand_user(*env_value("HF_TOKEN_PATH")) : hf_home() / "token";
  std::string t;
  try {
    // Through the Env like every other file; a missing or unreadable token file means no token.
    t = io::read_small_file(env, file, 1 << 16);
  } catch (const Error&) {
    return std::nullopt;
  }
  t = trim(t.substr(0, t.find('\0')));
  if (t.empty() || t.size() > 4096) return std::nullopt;
  return t;
}

std::chrono::milliseconds seconds_from_env(const char* name, std::chrono::milliseconds fallback) {
  if (const auto v = env_value(name)) {
    char* end = nullptr;
    const double s = std::strtod(v->c_str(), &end);
    if (end != v->c_str() && s > 0 && s < 1e6) {
      return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
    }
  }
  return fallback;
}

}  // namespace

bool env_flag(const char* name) {
  auto v = env_value(name);
  if (!v) return false;
  std::string u = trim(*v);
  for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return u == "1" || u == "ON" || u == "YES" || u == "TRUE";
}

fs::path resolve_cache_dir(const HubOptions& options) {
  if (!options.cache_dir.empty()) return options.cache_dir;
  if (const auto v = env_value("HF_HUB_CACHE")) return expand_user(*v);
  if (const auto v = env_value("HUGGINGFACE_HUB_CACHE")) return expand_user(*v);
  return hf_home() / "hub";
}

fs::path repo_cache_dir(std::string_view repo_id, const HubOptions& options) {
  return resolve_cache_dir(options) / repo_folder_name(repo_id);
}

Settings resolve_settings(const HubOptions& options) {
  Settings s;
  s.cache_dir = resolve_cache_dir(options);
  s.endpoint = !options.endpoint.empty() ? options.endpoint
                                         : env_value("HF_ENDPOINT").value_or("https://huggingface.co");
  while (!s.endpoint.empty() && s.endpoint.back() == '/') s.endpoint.pop_back();
  s.env = options.env != nullptr ? options.env : &io::Env::posix();
  s.token = options.token ? options.token : token_from_environment(*s.env);
  if (s.token && s.token->empty()) s.token.reset();
  // HF_HUB_OFFLINE wins when set; TRANSFORMERS_OFFLINE only counts when it is not.
  s.offline = options.offline || (env_value("HF_HUB_OFFLINE") ? env_flag("HF_HUB_OFFLINE")
                                                              : env_flag("TRANSFORMERS_OFFLINE"));
  switch (options.progress) {
    case ProgressMode::Never: s.progress = false; break;
    case ProgressMode::Always: s.progress = true; break;
    case ProgressMode::Auto:
      s.progress = ::isatty(STDERR_FILENO) == 1 && !env_flag("HF_HUB_DISABLE_PROGRESS_BARS");
      break;
  }
  s.max_parallel_downloads = std::clamp(options.max_parallel_downloads, 1, 64);
  s.max_attempts = std::clamp(options.max_attempts, 1, 100);
  s.retry_base_delay = std::max(options.retry_base_delay, std::chrono::milliseconds(0));
  s.metadata_timeout = options.metadata_timeout.count() > 0
                           ? options.metadata_timeout
                           : seconds_from_env("HF_HUB_ETAG_TIMEOUT", std::chrono::seconds(10));
  s.stall_timeout = options.stall_timeout.count() > 0
                        ? options.stall_timeout
                        : seconds_from_env("HF_HUB_DOWNLOAD_TIMEOUT", std::chrono::seconds(10));
  s.lock_wait = std::max(options.lock_wait, std::chrono::milliseconds(0));
  s.local_dir = options.local_dir;
  return s;
}

}  // namespace ckptio::hub
