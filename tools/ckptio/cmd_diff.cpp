// ckptio diff A B [--atol X] [--rtol Y]: names, dtypes, shapes and values of any two readable
// sources. Exit 0 when equal, 1 with the first differences listed.
#include <fmt/core.h>

#include <memory>
#include <string>

#include "ckptio/load.h"
#include "cli_source.h"
#include "command.h"
#include "source_kind.h"

namespace ckptio::cli {

namespace {

struct DiffArgs {
  std::string a;
  std::string b;
  double atol = 0.0;
  double rtol = 0.0;
  bool equal_nan = false;
  size_t max = 20;
};

int run_diff(const DiffArgs& args) {
  DiffOptions options;
  options.atol = args.atol;
  options.rtol = args.rtol;
  options.equal_nan = args.equal_nan;
  options.max_differences = args.max;
  // Both sources mean what they mean for every other command; the Hub only as hf://.
  const CliSource a = resolve_cli_source(args.a);
  const CliSource b = resolve_cli_source(args.b);
  options.source = a.options.allowed_root.empty() ? b.options : a.options;
  const DiffReport report = diff_checkpoints(a.path, b.path, options);
  if (report.equal()) {
    fmt::print("equal: {} tensors compared\n", report.compared);
    return 0;
  }
  fmt::print("different: {} difference(s)\n", report.difference_count);
  for (const auto& d : report.differences) fmt::print("  {}\n", printable(d));
  if (report.difference_count > report.differences.size()) {
    fmt::print("  ... and {} more\n", report.difference_count - report.differences.size());
  }
  return 1;
}

}  // namespace

void register_diff(Commands& commands) {
  Command& cmd = add_command(commands, "diff", "Compare the tensors of two checkpoints or model files");
  auto args = std::make_shared<DiffArgs>();
  cmd.positional("A", args->a, "a file, a folder, CKPT/model|ema|optimizer, or hf://org/name[@rev][/path]");
  cmd.positional("B", args->b, "the same forms as A");
  cmd.non_negative("--atol", args->atol, "absolute tolerance for float values");
  cmd.non_negative("--rtol", args->rtol,
                   "relative tolerance for float values (numpy.isclose: |a-b| <= atol + rtol*|b|; "
                   "infinities equal only themselves)");
  cmd.flag("--equal-nan", args->equal_nan, "NaN equals NaN (default: NaN equals nothing)");
  cmd.option("--max", args->max, "differences to list (default 20)");
  cmd.action([args] { return run_diff(*args); });
}

}  // namespace ckptio::cli
