// MismatchReport: what did not match when tensors of a source were given to a destination that
// names the tensors it wants (load_checkpoint's targets, a CheckpointIO component, a libtorch
// module). Every loader that matches names reports through this one type.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace ckptio {

struct MismatchReport {
  std::vector<std::string> missing;     // wanted by the destination, absent from the source
  std::vector<std::string> unexpected;  // in the source, not wanted by the destination
  // In both but of another shape or dtype, one line each naming both sides:
  // "name: source BF16 [2, 3] vs target F32 [3, 2]" (each loader words it its own way).
  std::vector<std::string> mismatched;

  // Nothing missing, unexpected or mismatched.
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  size_t count() const { return missing.size() + unexpected.size() + mismatched.size(); }
  // One line per problem, each prefixed by its kind ("missing: a"); empty when ok().
  std::string describe() const;
};

}  // namespace ckptio
