// Test fixture around tests/hub/fake_hub_server.py: builds the repos it serves, starts it on
// 127.0.0.1 (OS-assigned ports), injects faults, reads its request log, and stops it.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <openssl/evp.h>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/test_util.h"

extern char** environ;

namespace ckptio::testing {

using nlohmann::json;

inline std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

inline std::string git_sha1_hex(std::string_view data) {
  const std::string blob = "blob " + std::to_string(data.size()) + std::string(1, '\0') + std::string(data);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(blob.data(), blob.size(), digest, &len, EVP_sha1(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

// Deterministic pseudo-random bytes, so that a spliced or shifted download cannot pass by luck.
inline std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

// A 40-hex commit id derived from a label.
inline std::string commit_id(std::string_view label) { return git_sha1_hex(label); }

class FakeHub {
 public:
  explicit FakeHub(fs::path state_dir) : dir_(std::move(state_dir)) {
    fs::create_directories(dir_ / "files");
    repos_ = json{{"repos", json::object()}};
  }
  ~FakeHub() { stop(); }
  FakeHub(const FakeHub&) = delete;
  FakeHub& operator=(const FakeHub&) = delete;

  // Adds a file to `commit` of `repo` (creating both); `lfs` files are served through the CDN.
  void add_file(const std::string& repo, const std::string& commit, const std::string& path,
                const std::string& content, bool lfs, bool weak_etag = false) {
    const fs::path file = dir_ / "files" / std::to_string(next_file_++);
    write_file(file, content);
    json entry = {{"file", file.string()}, {"lfs", lfs}};
    if (weak_etag) entry["weak_etag"] = true;
    repos_["repos"][repo]["commits"][commit][path] = entry;
    if (!repos_["repos"][repo].contains("refs")) repos_["repos"][repo]["refs"] = json::object();
    publish();
  }
  void set_ref(const std::string& repo, const std::string& ref, const std::string& commit) {
    repos_["repos"][repo]["refs"][ref] = commit;
    publish();
  }
  void set_repo_field(const std::string& repo, const std::string& key, const json& value) {
    repos_["repos"][repo][key] = value;
    publish();
  }
  void set_faults(const json& faults) { write_atomic(dir_ / "faults.json", faults.dump()); }
  // Ends the wait of every request held by the "until_released" fault `id`.
  void release(const std::string& id) { write_atomic(dir_ / ("released-" + id), ""); }

  void start(double lifetime_s = 120) {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    const std::string script = std::string(CKPTIO_SOURCE_DIR) + "/tests/hub/fake_hub_server.py";
    const std::string dir = dir_.string();
    const std::string life = std::to_string(lifetime_s);
    const char* argv[] = {"/usr/bin/python3", script.c_str(), dir.c_str(), "--lifetime", life.c_str(), nullptr};
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, const_cast<char**>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    if (rc != 0) {
      ::close(pipe_fds[0]);
      throw std::runtime_error("cannot start the fake hub server");
    }
    // The first line is {"hub": P, "cdn": Q}; give up after 30 s.
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{pipe_fds[0], POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    ::close(pipe_fds[0]);
    if (line.find('\n') == std::string::npos) {
      stop();
      throw std::runtime_error("the fake hub server did not report its ports");
    }
    const json ports = json::parse(line.substr(0, line.find('\n')));
    hub_port_ = ports["hub"].get<int>();
    cdn_port_ = ports["cdn"].get<int>();
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(hub_port_); }
  int cdn_port() const { return cdn_port_; }

  // Every logged request (start records only; see events()).
  std::vector<json> requests() const {
    std::vector<json> out;
    for (auto& r : events()) {
      if (!r.contains("event")) out.push_back(r);
    }
    return out;
  }
  // Start records and "done" records, in log order.
  std::vector<json> events() const {
    std::vector<json> out;
    std::ifstream in(dir_ / "requests.log");
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) out.push_back(json::parse(line));
    }
    return out;
  }
  std::vector<json> requests(const std::string& server, const std::string& method) const {
    std::vector<json> out;
    for (auto& r : requests()) {
      if (r["server"] == server && r["method"] == method && !r.contains("event")) out.push_back(r);
    }
    return out;
  }
  void clear_requests() { fs::remove(dir_ / "requests.log"); }

 private:
  void publish() { write_atomic(dir_ / "repos.json", repos_.dump(1)); }
  void write_atomic(const fs::path& path, const std::string& text) {
    const fs::path tmp = path.string() + ".tmp";
    write_file(tmp, text);
    fs::rename(tmp, path);
  }

  fs::path dir_;
  json repos_;
  int next_file_ = 0;
  pid_t pid_ = -1;
  int hub_port_ = 0;
  int cdn_port_ = 0;
};

// Sets an environment variable for the scope of a test and restores it afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// Clears every variable the Hub client reads, so that the machine's settings cannot leak into a
// test; HF_HOME points into the test's folder.
class CleanHubEnv {
 public:
  explicit CleanHubEnv(const fs::path& home) : home_("HF_HOME", home.c_str()) {}

 private:
  ScopedEnv home_;
  ScopedEnv a_{"HF_HUB_CACHE", nullptr}, b_{"HUGGINGFACE_HUB_CACHE", nullptr},
      c_{"XDG_CACHE_HOME", nullptr}, d_{"HF_ENDPOINT", nullptr}, e_{"HF_TOKEN", nullptr},
      f_{"HUGGING_FACE_HUB_TOKEN", nullptr}, g_{"HF_TOKEN_PATH", nullptr},
      h_{"HF_HUB_OFFLINE", nullptr}, i_{"TRANSFORMERS_OFFLINE", nullptr},
      j_{"HF_HUB_DISABLE_PROGRESS_BARS", nullptr}, k_{"HF_HUB_ETAG_TIMEOUT", nullptr},
      l_{"HF_HUB_DOWNLOAD_TIMEOUT", nullptr}, m_{"no_proxy", "127.0.0.1,localhost"},
      n_{"http_proxy", nullptr}, o_{"HTTP_PROXY", nullptr}, p_{"all_proxy", nullptr},
      q_{"ALL_PROXY", nullptr};
};

}  // namespace ckptio::testing
