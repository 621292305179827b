// How the core's non-tensor data crosses into Python: pt::Value trees (a torch file's object, a
// DCP value) and shapes. One converter serves every binding; what a tensor inside a tree becomes
// is the caller's policy (a reference to a storage, an error, ...).
#pragma once

#include <nanobind/nanobind.h>

#include <functional>

#include "ckptio/tensor.h"
#include "ckptio/torch_pickle.h"

namespace ckptio::python {

// What a tensor leaf of a tree becomes; it may throw to refuse tensors.
using TensorPolicy = std::function<nanobind::object(const pt::TorchTensor&)>;

// None/bool/int/float/str/bytes as themselves, lists as lists, tuples as tuples, dicts as dicts
// (keys converted too), tensors through `on_tensor`.
nanobind::object value_to_python(const pt::Value& v, const TensorPolicy& on_tensor);

// A shape as a list of ints.
nanobind::list shape_list(const Shape& shape);

}  // namespace ckptio::python
