// How the CLI's commands plug in: each command file defines one register_* function, main.cpp
// calls them all. A command's action returns the process exit code (0 ok, 1 failure); errors are
// thrown as ckptio::Error and turned into `ckptio: error: <code>: <message>` by main.cpp.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace ckptio::cli {

// Set by a subcommand's callback; main runs it after parsing so that exceptions are handled in one
// place.
using Action = std::function<int()>;

void register_inspect(CLI::App& app, Action& action);
void register_verify(CLI::App& app, Action& action);
void register_convert(CLI::App& app, Action& action);
void register_diff(CLI::App& app, Action& action);
void register_download(CLI::App& app, Action& action);
void register_ls(CLI::App& app, Action& action);
void register_prune(CLI::App& app, Action& action);

}  // namespace ckptio::cli
