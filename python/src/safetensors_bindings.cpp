#include "bindings.h"

namespace ckptio::python {

void bind_safetensors(nanobind::module_&) {}

}  // namespace ckptio::python
