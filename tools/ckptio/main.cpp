// ckptio: inspect, verify and convert checkpoints and model files.
// Exit codes: 0 success, 1 the input is bad or the operation failed, 2 usage.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "ckptio/error.h"
#include "command.h"
#include "source_kind.h"

int main(int argc, char** argv) {
  CLI::App app{"ckptio: save, load, inspect and verify neural-network checkpoints", "ckptio"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ckptio " CKPTIO_VERSION);
  ckptio::cli::Action action;
  ckptio::cli::register_inspect(app, action);
  ckptio::cli::register_verify(app, action);
  ckptio::cli::register_convert(app, action);
  ckptio::cli::register_diff(app, action);
  ckptio::cli::register_download(app, action);
  ckptio::cli::register_ls(app, action);
  ckptio::cli::register_prune(app, action);
  // CLI11 would answer a mistyped command with "A subcommand is required": name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string commands;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == argv[1];
      commands += (commands.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::cerr << "ckptio: unknown command '" << ckptio::cli::printable(argv[1])
                << "' (commands: " << commands << "; see ckptio --help)\n";
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  try {
    return action ? action() : 2;
  } catch (const ckptio::Error& e) {
    std::fflush(stdout);
    std::cerr << "ckptio: error: " << ckptio::error_code_name(e.code()) << ": "
              // Names inside messages come from files: keep the error on one line.
              << ckptio::cli::printable(e.message())
              << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "ckptio: error: internal: " << ckptio::cli::printable(e.what()) << "\n";
    return 1;
  }
}
