// The command line every benchmark program accepts (`make bench` passes the same BENCH_ARGS to
// all of them): --quick, --json, --dir, --out, --repeat, --no-peers, plus options of its own.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace ckptio::bench {

namespace fs = std::filesystem;

struct Options {
  bool quick = false;
  bool json = false;    // print JSON instead of the Markdown report
  bool peers = true;    // run the PyTorch peers where the program has any
  int repeat = 3;       // runs per figure; the median is reported
  fs::path dir;         // where the benchmark's files go (removed at the end)
  std::optional<fs::path> out;  // where <program>.json and <program>.md go; nothing written if unset
  fs::path self;        // argv[0], to find sibling programs
};

struct ProgramInfo {
  std::string name;         // "ckptio-bench-sharded"
  std::string description;  // one line for --help
  std::string quick_size;   // "--quick: 256 MiB instead of 2 GiB"
  int default_repeat = 3;
};

// Parses argv; `extra` may add program-specific options to the CLI11 app. Prints usage and exits
// on --help (status 0) or on a bad argument (status 2).
Options parse_options(int argc, char** argv, const ProgramInfo& info,
                      const std::function<void(CLI::App&)>& extra = {});

}  // namespace ckptio::bench
