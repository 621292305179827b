#include "bindings.h"

namespace ckptio::python {

void bind_checkpoint(nanobind::module_&) {}

}  // namespace ckptio::python
