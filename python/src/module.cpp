#include <nanobind/nanobind.h>

#include "bindings.h"

NB_MODULE(_core, m) {
  m.doc() = "ckptio's C++ core; use the ckptio package, not this module.";
  ckptio::python::bind_errors(m);
  ckptio::python::bind_safetensors(m);
  ckptio::python::bind_checkpoint(m);
  ckptio::python::bind_dist(m);
}
