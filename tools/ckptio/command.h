// How the CLI's commands plug in: each command file defines one register_* function that declares
// its name, arguments and action on a Command. Only main.cpp sees the argument parser (CLI11): it
// turns the declarations into one, parses, and runs the chosen command's action, so that errors
// are handled in one place. An action returns the process exit code (0 ok, 1 failure); errors are
// thrown as ckptio::Error and turned into `ckptio: error: <code>: <message>` by main.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ckptio::cli {

using Action = std::function<int()>;

// One declared argument. Names without a leading '-' are positional; "--quiet,-q" gives aliases.
struct ArgSpec {
  enum class Kind : uint8_t { String, Strings, Double, Size, Int64, Flag };
  Kind kind = Kind::String;
  std::string names;
  std::string help;
  void* target = nullptr;  // std::string, std::vector<std::string>, double, size_t, int64_t, bool
  bool required = false;
  bool non_negative = false;  // Double: refuse values below 0 (usage error)
  int64_t min = INT64_MIN;    // Int64: refuse values below this (usage error)
};

class Command {
 public:
  Command(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {}

  void positional(const std::string& name, std::string& out, const std::string& help,
                  bool required = true) {
    add({ArgSpec::Kind::String, name, help, &out, required});
  }
  void positionals(const std::string& name, std::vector<std::string>& out, const std::string& help) {
    add({ArgSpec::Kind::Strings, name, help, &out});
  }
  void option(const std::string& names, std::string& out, const std::string& help) {
    add({ArgSpec::Kind::String, names, help, &out});
  }
  void option(const std::string& names, size_t& out, const std::string& help) {
    add({ArgSpec::Kind::Size, names, help, &out});
  }
  void non_negative(const std::string& names, double& out, const std::string& help) {
    ArgSpec a{ArgSpec::Kind::Double, names, help, &out};
    a.non_negative = true;
    add(std::move(a));
  }
  void at_least(const std::string& names, int64_t& out, int64_t min, const std::string& help,
                bool required) {
    ArgSpec a{ArgSpec::Kind::Int64, names, help, &out, required};
    a.min = min;
    add(std::move(a));
  }
  void flag(const std::string& names, bool& out, const std::string& help) {
    add({ArgSpec::Kind::Flag, names, help, &out});
  }
  // The action runs after a successful parse; it may capture shared state that the targets
  // above point into (keeping it alive).
  void action(Action action) { action_ = std::move(action); }

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<ArgSpec>& args() const { return args_; }
  int run() const { return action_ ? action_() : 2; }

 private:
  void add(ArgSpec spec) { args_.push_back(std::move(spec)); }
  std::string name_;
  std::string help_;
  std::vector<ArgSpec> args_;
  Action action_;
};

using Commands = std::vector<std::unique_ptr<Command>>;

inline Command& add_command(Commands& commands, std::string name, std::string help) {
  commands.push_back(std::make_unique<Command>(std::move(name), std::move(help)));
  return *commands.back();
}

void register_inspect(Commands& commands);
void register_verify(Commands& commands);
void register_convert(Commands& commands);
void register_diff(Commands& commands);
void register_download(Commands& commands);
void register_ls(Commands& commands);
void register_prune(Commands& commands);
void register_consolidate(Commands& commands);

}  // namespace ckptio::cli
