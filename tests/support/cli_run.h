// Runs the built `ckptio` binary the way a user does, for the CLI tests of every area: arguments
// passed as a list (no shell, no quoting), stdout and stderr captured apart, the exit code, whether
// a signal ended it, and the child's peak resident memory (getrusage of the child via wait4).
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "support/test_util.h"

namespace ckptio::testing {

struct CliResult {
  int exit_code = -1;    // -1 when a signal ended it
  bool signaled = false;
  std::string out;
  std::string err;
  long max_rss_kib = 0;  // the child's peak resident set size
  // stdout then stderr, for checks that only look for a phrase.
  std::string all() const { return out + err; }
};

#if defined(__SANITIZE_ADDRESS__)
#define CKPTIO_CLI_RUN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CKPTIO_CLI_RUN_ASAN 1
#endif
#endif

// `env` entries ("NAME=value") are added to the child's environment. A non-zero
// `address_space_cap` limits the child's address space (RLIMIT_AS), so that an input that makes it
// allocate without bound fails the test instead of exhausting the machine; ASan builds skip the
// cap (ASan reserves terabytes of shadow address space).
inline CliResult run_ckptio(const std::vector<std::string>& args,
                            const std::vector<std::string>& env = {},
                            uint64_t address_space_cap = 0) {
  const fs::path dir = fs::temp_directory_path();
  const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(std::rand());
  const fs::path out_path = dir / ("ckptio-cli-out-" + tag);
  const fs::path err_path = dir / ("ckptio-cli-err-" + tag);
  const std::string binary = std::string(CKPTIO_BIN_DIR) + "/ckptio";
  std::vector<std::string> argv_strings{binary};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || err < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(127);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
#ifndef CKPTIO_CLI_RUN_ASAN
    if (address_space_cap != 0) {
      const struct rlimit cap {address_space_cap, address_space_cap};
      if (::setrlimit(RLIMIT_AS, &cap) != 0) ::_exit(127);
    }
#else
    (void)address_space_cap;
#endif
    std::vector<char*> argv;
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  CliResult r;
  int status = 0;
  struct rusage usage {};
  if (pid < 0 || ::wait4(pid, &status, 0, &usage) != pid) return r;
  r.signaled = WIFSIGNALED(status);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.max_rss_kib = usage.ru_maxrss;
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  std::error_code ec;
  fs::remove(out_path, ec);
  fs::remove(err_path, ec);
  return r;
}

// The same with the arguments written as one line, split at spaces (test paths have none).
inline CliResult run_ckptio_line(const std::string& line,
                                 const std::vector<std::string>& env = {},
                                 uint64_t address_space_cap = 0) {
  std::vector<std::string> args;
  size_t start = 0;
  while (start < line.size()) {
    const size_t end = std::min(line.find(' ', start), line.size());
    if (end > start) args.push_back(line.substr(start, end - start));
    start = end + 1;
  }
  return run_ckptio(args, env, address_space_cap);
}

}  // namespace ckptio::testing
