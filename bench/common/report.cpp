#include "common/report.h"

#include <cstdio>
#include <sstream>

#include <fmt/core.h>

#include "ckptio/io.h"
#include "common/machine.h"

namespace ckptio::bench {

std::string group_name(Group g) {
  switch (g) {
    case Group::Limit: return "limit";
    case Group::Ckptio: return "ckptio";
    case Group::Peer: return "peer";
    case Group::Reference: return "reference";
  }
  return "?";
}

Goal Goal::ratio(std::string text, std::string row, std::string against, double target) {
  Goal g;
  g.text = std::move(text);
  g.row = std::move(row);
  g.against = std::move(against);
  g.target = target;
  return g;
}

Goal Goal::at_most(std::string text, std::string row, double target, double scale, std::string unit) {
  Goal g;
  g.text = std::move(text);
  g.row = std::move(row);
  g.target = target;
  g.scale = scale;
  g.unit = std::move(unit);
  return g;
}

Goal Goal::value_at_most(std::string text, std::optional<double> value, double target, std::string unit) {
  Goal g;
  g.text = std::move(text);
  g.target = target;
  g.unit = std::move(unit);
  g.value = value;
  return g;
}

Report::Report(std::string program, std::string title)
    : program_(std::move(program)), title_(std::move(title)) {
  if (std::string note = machine_memory_note(); !note.empty()) context_.push_back(std::move(note));
}

const Row* Report::find(const std::string& name) const {
  for (const Row& r : rows_) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

std::optional<double> Report::ratio(const Row& row, const std::string& against) const {
  const Row* other = against.empty() ? nullptr : find(against);
  if (other == nullptr || !row.seconds || !other->seconds || *row.seconds <= 0 || *other->seconds <= 0) {
    return std::nullopt;
  }
  const double time_ratio = *other->seconds / *row.seconds;
  if (row.bytes == 0 || other->bytes == 0) return time_ratio;
  return time_ratio * static_cast<double>(row.bytes) / static_cast<double>(other->bytes);
}

bool Report::limit_suspect(const Row& row) const {
  const auto r = ratio(row, row.limit);
  return r && *r > kLimitTolerance;
}

Report::GoalResult Report::evaluate(const Goal& g) const {
  const Row* row = find(g.row);
  if (g.against.empty()) {
    std::optional<double> v = g.value;
    if (!v && row && row->seconds) v = *row->seconds * g.scale;
    if (!v) return {std::nullopt, "not measured"};
    return {v, *v <= g.target ? "met" : "NOT met"};
  }
  if (row == nullptr) return {std::nullopt, "not measured"};
  const auto r = ratio(*row, g.against);
  if (!r) return {std::nullopt, "not measured"};
  const Row* against = find(g.against);
  if (against->group == Group::Limit && *r > kLimitTolerance) return {r, "LIMIT SUSPECT"};
  return {r, *r >= g.target ? "met" : "NOT met"};
}

std::vector<std::string> Report::suspect_notes() const {
  std::vector<std::string> out;
  for (const Row& r : rows_) {
    if (!limit_suspect(r)) continue;
    out.push_back(fmt::format(
        "LIMIT SUSPECT: \"{}\" ran at {:.2f}x \"{}\". A limit is the best raw method for the same "
        "bytes, so this means the limit is wrong on this machine, not that ckptio beats it; ratios "
        "against it say nothing.",
        r.name, *ratio(r, r.limit), r.limit));
  }
  return out;
}

namespace {

std::string seconds_text(const Row& r) {
  if (!r.seconds) return "-";
  return *r.seconds < 0.1 ? fmt::format("{:.5f}", *r.seconds) : fmt::format("{:.3f}", *r.seconds);
}

std::string gbps_text(const Row& r) {
  if (!r.seconds || r.bytes == 0 || *r.seconds <= 0) return "-";
  return fmt::format("{:.2f}", static_cast<double>(r.bytes) / *r.seconds / 1e9);
}

}  // namespace

std::string Report::markdown() const {
  std::ostringstream md;
  md << "# " << program_ << ": " << title_ << "\n\n";
  for (const auto& c : context_) md << c << "\n\n";
  md << "| Group | Measurement | Time (s) | GB/s | vs limit | vs peer | Notes |\n";
  md << "|---|---|---:|---:|---|---|---|\n";
  for (const Row& r : rows_) {
    std::string vs_limit, vs_peer;
    if (const auto x = ratio(r, r.limit)) {
      vs_limit = fmt::format("{:.2f}x {}{}", *x, r.limit, limit_suspect(r) ? " (LIMIT SUSPECT)" : "");
    }
    if (const auto x = ratio(r, r.peer)) vs_peer = fmt::format("{:.2f}x {}", *x, r.peer);
    md << fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", group_name(r.group), r.name,
                      seconds_text(r), gbps_text(r), vs_limit, vs_peer, r.note);
  }
  if (!goals_.empty()) {
    md << "\nGoals (measured in this run; not asserted):\n\n";
    for (const Goal& g : goals_) {
      const GoalResult res = evaluate(g);
      if (g.against.empty()) {
        md << fmt::format("- {}: {} (goal <= {} {}) - {}\n", g.text,
                          res.value ? fmt::format("{:.3g} {}", *res.value, g.unit) : "-", g.target,
                          g.unit, res.status);
      } else {
        md << fmt::format("- {}: {} (goal >= {:.2f}x) - {}\n", g.text,
                          res.value ? fmt::format("{:.2f}x", *res.value) : "-", g.target, res.status);
      }
    }
  }
  for (const auto& n : suspect_notes()) md << "\n" << n << "\n";
  for (const auto& n : notes_) md << "\nNote: " << n << "\n";
  return md.str();
}

nlohmann::json Report::json() const {
  using nlohmann::json;
  json j = extra_;
  j["program"] = program_;
  j["title"] = title_;
  j["context"] = context_;
  j["rows"] = json::array();
  for (const Row& r : rows_) {
    json row = {{"group", group_name(r.group)}, {"name", r.name}, {"bytes", r.bytes},
                {"seconds", r.seconds ? json(*r.seconds) : json(nullptr)},
                {"gbps", r.seconds && r.bytes && *r.seconds > 0
                             ? json(static_cast<double>(r.bytes) / *r.seconds / 1e9)
                             : json(nullptr)},
                {"limit", r.limit}, {"peer", r.peer}, {"note", r.note},
                {"limit_suspect", limit_suspect(r)}};
    const auto vl = ratio(r, r.limit), vp = ratio(r, r.peer);
    row["vs_limit"] = vl ? json(*vl) : json(nullptr);
    row["vs_peer"] = vp ? json(*vp) : json(nullptr);
    j["rows"].push_back(std::move(row));
  }
  j["goals"] = json::array();
  for (const Goal& g : goals_) {
    const GoalResult res = evaluate(g);
    j["goals"].push_back({{"goal", g.text}, {"row", g.row}, {"against", g.against},
                          {"kind", g.against.empty() ? "at most" : "ratio at least"},
                          {"target", g.target}, {"unit", g.against.empty() ? g.unit : "x"},
                          {"value", res.value ? json(*res.value) : json(nullptr)},
                          {"status", res.status}});
  }
  std::vector<std::string> notes = suspect_notes();
  notes.insert(notes.end(), notes_.begin(), notes_.end());
  j["notes"] = notes;
  return j;
}

void Report::emit(const Options& options) const {
  const std::string md = markdown();
  const std::string js = json().dump(2) + "\n";
  std::string written;
  if (options.out) {
    fs::create_directories(*options.out);
    io::write_file_atomic(io::Env::posix(), *options.out / (program_ + ".json"), js);
    io::write_file_atomic(io::Env::posix(), *options.out / (program_ + ".md"), md);
    written = (*options.out / program_).string() + ".{json,md}";
  }
  std::fputs(options.json ? js.c_str() : md.c_str(), stdout);
  if (!written.empty()) std::fprintf(stderr, "%s: wrote %s\n", program_.c_str(), written.c_str());
  std::fflush(stdout);
}

}  // namespace ckptio::bench
