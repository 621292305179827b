#include "common/options.h"

#include <CLI/CLI.hpp>

namespace ckptio::bench {

Options parse_options(int argc, char** argv, const ProgramInfo& info,
                      const std::function<void(CLI::App&)>& extra) {
  Options o;
  o.self = argv[0];
  o.repeat = info.default_repeat;
  o.dir = fs::temp_directory_path();
  std::string out;
  CLI::App app(info.description, info.name);
  // `make bench` puts its own --out before BENCH_ARGS: the last one given wins.
  const auto last = CLI::MultiOptionPolicy::TakeLast;
  app.add_flag("--quick", o.quick, info.quick_size);
  app.add_flag("--json", o.json, "print the results as JSON instead of the Markdown report");
  app.add_option("--dir", o.dir, "where the benchmark's files go (default $TMPDIR or /tmp); removed at the end")
      ->multi_option_policy(last);
  app.add_option("--out", out, "write <program>.json and <program>.md into this folder (default: write nothing)")
      ->multi_option_policy(last);
  app.add_option("--repeat", o.repeat, "runs per figure, the median is reported")
      ->check(CLI::Range(1, 1000000))
      ->default_val(o.repeat)
      ->multi_option_policy(last);
  bool no_peers = false;
  app.add_flag("--no-peers", no_peers, "skip the PyTorch peers (torch.save/torch.load, libtorch)");
  if (extra) extra(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e) == 0 ? 0 : 2);
  }
  o.peers = !no_peers;
  if (!out.empty()) o.out = fs::path(out);
  return o;
}

}  // namespace ckptio::bench
