// HubOptions with every empty field filled from the environment, the way huggingface_hub's
// constants.py reads it, so that both tools agree on the cache, endpoint, token and offline mode.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include "ckptio/hub.h"

namespace ckptio::hub {

struct Settings {
  fs::path cache_dir;
  std::string endpoint;  // no trailing "/"
  std::optional<std::string> token;
  bool offline = false;
  bool progress = false;
  int max_parallel_downloads = 8;
  int max_attempts = 5;
  std::chrono::milliseconds retry_base_delay{500};
  std::chrono::milliseconds metadata_timeout{10000};
  std::chrono::milliseconds stall_timeout{10000};
  std::chrono::milliseconds lock_wait{std::chrono::minutes(5)};
  io::Env* env = nullptr;
  fs::path local_dir;
};

// True for "1", "ON", "YES", "TRUE" in any case (huggingface_hub's ENV_VARS_TRUE_VALUES).
bool env_flag(const char* name);

Settings resolve_settings(const HubOptions& options);

}  // namespace ckptio::hub
