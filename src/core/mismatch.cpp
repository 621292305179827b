#include "ckptio/mismatch.h"

namespace ckptio {

std::string MismatchReport::describe() const {
  std::string out;
  const auto add = [&out](const char* kind, const std::vector<std::string>& lines) {
    for (const auto& line : lines) {
      if (!out.empty()) out += '\n';
      out += kind;
      out += ": ";
      out += line;
    }
  };
  add("missing", missing);
  add("unexpected", unexpected);
  add("mismatched", mismatched);
  return out;
}

}  // namespace ckptio
