// The one place inspect and verify decide which handler a SOURCE goes to, so that both commands
// (and convert and diff, through the library) give every source the same meaning.
#pragma once

#include <string>

namespace ckptio::cli {

enum class Check { Inspect, Verify };

// `full`: verify --full (training checkpoints: checksums). Returns the exit code.
int run_on_source(const std::string& spec, Check check, bool json, bool full);

}  // namespace ckptio::cli
