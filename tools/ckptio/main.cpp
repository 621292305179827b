// ckptio: inspect, verify and convert checkpoints and model files.
// Exit codes: 0 success, 1 the input is bad or the operation failed, 2 usage.
// The only file that sees CLI11: the commands declare their arguments through command.h.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <limits>
#include <string>

#include "ckptio/error.h"
#include "command.h"
#include "source_kind.h"

namespace {

using ckptio::cli::ArgSpec;

void add_arg(CLI::App& sub, const ArgSpec& a) {
  CLI::Option* o = nullptr;
  switch (a.kind) {
    case ArgSpec::Kind::String:
      o = sub.add_option(a.names, *static_cast<std::string*>(a.target), a.help);
      break;
    case ArgSpec::Kind::Strings:
      o = sub.add_option(a.names, *static_cast<std::vector<std::string>*>(a.target), a.help);
      break;
    case ArgSpec::Kind::Double:
      o = sub.add_option(a.names, *static_cast<double*>(a.target), a.help);
      if (a.non_negative) o->check(CLI::NonNegativeNumber);
      break;
    case ArgSpec::Kind::Size:
      o = sub.add_option(a.names, *static_cast<size_t*>(a.target), a.help);
      break;
    case ArgSpec::Kind::Int64:
      o = sub.add_option(a.names, *static_cast<int64_t*>(a.target), a.help);
      o->check(CLI::Range(a.min, std::numeric_limits<int64_t>::max()));
      break;
    case ArgSpec::Kind::Flag:
      o = sub.add_flag(a.names, *static_cast<bool*>(a.target), a.help);
      break;
  }
  if (a.required) o->required();
}

}  // namespace

int main(int argc, char** argv) {
  ckptio::cli::Commands commands;
  ckptio::cli::register_inspect(commands);
  ckptio::cli::register_verify(commands);
  ckptio::cli::register_convert(commands);
  ckptio::cli::register_diff(commands);
  ckptio::cli::register_download(commands);
  ckptio::cli::register_ls(commands);
  ckptio::cli::register_prune(commands);
  ckptio::cli::register_consolidate(commands);

  CLI::App app{"ckptio: save, load, inspect and verify neural-network checkpoints", "ckptio"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ckptio " CKPTIO_VERSION);
  std::vector<std::pair<CLI::App*, const ckptio::cli::Command*>> subs;
  for (const auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c->name(), c->help());
    for (const ArgSpec& a : c->args()) add_arg(*sub, a);
    subs.emplace_back(sub, c.get());
  }
  // CLI11 would answer a mistyped command with "A subcommand is required": name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const auto& c : commands) {
      known = known || c->name() == argv[1];
      names += (names.empty() ? "" : ", ") + c->name();
    }
    if (!known) {
      std::cerr << "ckptio: unknown command '" << ckptio::cli::printable(argv[1])
                << "' (commands: " << names << "; see ckptio --help)\n";
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
    for (const auto& [sub, command] : subs) {
      if (sub->parsed()) return command->run();
    }
    return 2;
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
