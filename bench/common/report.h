// What a benchmark program reports: rows of measurements (limits, ckptio, peers), each compared to
// the limit and the peer it names; goals over those comparisons; notes. Printed as Markdown or
// JSON, and written to <out>/<program>.{json,md} only when --out was given.
//
// A measurement faster than its limit by more than kLimitTolerance means the limit is not the best
// raw method on this machine: the row, the goals on it and a note say "LIMIT SUSPECT" instead of
// pretending that the goal is met.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/options.h"

namespace ckptio::bench {

inline constexpr double kLimitTolerance = 1.05;

enum class Group { Limit, Ckptio, Peer, Reference };

struct Row {
  Group group = Group::Ckptio;
  std::string name;
  std::optional<double> seconds;  // nullopt: not measured (the note says why)
  uint64_t bytes = 0;             // 0: a time without a throughput
  std::string limit;              // name of the Limit row this is measured against
  std::string peer;               // name of the Peer row this is compared with
  std::string note;
};

// A goal is either a ratio to another row (higher is better: speed relative to a limit, speedup
// over a peer) or an absolute bound on a row's value.
struct Goal {
  std::string text;
  std::string row;        // the measured row
  std::string against;    // a limit or peer row; empty for an absolute goal
  double target = 0;      // ratio >= target, or value <= target for absolute goals
  double scale = 1;       // absolute goals: value = seconds * scale (1e3 for milliseconds)
  std::string unit;       // absolute goals: "ms", "MiB"
  std::optional<double> value;  // absolute goals measured outside a row (peak memory)

  // row's speed relative to `against` >= target.
  static Goal ratio(std::string text, std::string row, std::string against, double target);
  // row's seconds * scale <= target (in `unit`).
  static Goal at_most(std::string text, std::string row, double target, double scale, std::string unit);
  // a value measured outside the rows <= target (in `unit`).
  static Goal value_at_most(std::string text, std::optional<double> value, double target, std::string unit);
};

class Report {
 public:
  // The context starts with the machine's memory note (common/machine.h) where one applies.
  Report(std::string program, std::string title);

  void context(std::string line) { context_.push_back(std::move(line)); }
  void add(Row row) { rows_.push_back(std::move(row)); }
  void goal(Goal g) { goals_.push_back(std::move(g)); }
  void note(std::string line) { notes_.push_back(std::move(line)); }
  void set(const std::string& key, nlohmann::json value) { extra_[key] = std::move(value); }

  const Row* find(const std::string& name) const;
  // Throughput of `row` relative to `against` (time ratio when either has no bytes).
  std::optional<double> ratio(const Row& row, const std::string& against) const;
  bool limit_suspect(const Row& row) const;

  std::string markdown() const;
  nlohmann::json json() const;

  // Prints (Markdown, or JSON with --json) and writes <out>/<program>.{json,md} when --out is set.
  void emit(const Options& options) const;

 private:
  struct GoalResult {
    std::optional<double> value;
    std::string status;  // "met", "NOT met", "LIMIT SUSPECT", "not measured"
  };
  GoalResult evaluate(const Goal& g) const;
  std::vector<std::string> suspect_notes() const;

  std::string program_, title_;
  std::vector<std::string> context_, notes_;
  std::vector<Row> rows_;
  std::vector<Goal> goals_;
  nlohmann::json extra_ = nlohmann::json::object();
};

std::string group_name(Group g);

}  // namespace ckptio::bench
