#include "common/peer_process.h"

#include <cstdio>

namespace ckptio::bench {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

PeerRun run_peer_process(const std::string& command) {
  PeerRun run;
  std::string out;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) {
    run.error = "cannot start: " + command;
    return run;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  const auto brace = out.rfind("\n{") == std::string::npos ? out.find('{') : out.rfind("\n{") + 1;
  if (status != 0 || brace == std::string::npos) {
    run.error = "exit status " + std::to_string(status) + ": " + out.substr(0, 300);
    return run;
  }
  try {
    run.result = nlohmann::json::parse(out.substr(brace));
  } catch (const std::exception& e) {
    run.error = std::string("unreadable output: ") + e.what() + ": " + out.substr(0, 300);
  }
  return run;
}

}  // namespace ckptio::bench
