// How tensors cross between Python and the core, zero-copy both ways.
//
// Contract: a tensor crosses as (dtype name, shape, raw bytes), the raw bytes being a 1-D uint8
// C-contiguous CPU array that aliases the tensor's memory. The Python side
// (ckptio/_tensors.py) turns a torch.Tensor / numpy.ndarray into that triple with views only
// (`t.reshape(-1).view(torch.uint8)`), and turns the triple back with `.view(dtype).reshape(shape)`,
// which works for every safetensors dtype (BF16, the F8 kinds, BOOL, 0-d, empty) whatever DLPack
// or numpy know of them.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>

#include "ckptio/tensor.h"

namespace ckptio::python {

// Raw bytes handed in by Python: read-only, CPU, contiguous, 1-D.
using RawIn = nanobind::ndarray<const uint8_t, nanobind::ndim<1>, nanobind::c_contig,
                                nanobind::device::cpu>;
// Raw bytes handed to Python; the array keeps the core's Tensor (heap or file mapping) alive.
using RawOut = nanobind::ndarray<nanobind::numpy, uint8_t, nanobind::ndim<1>, nanobind::c_contig>;
// The same for bytes of a read-only file mapping (numpy marks the array not writable).
using RawOutReadOnly =
    nanobind::ndarray<nanobind::numpy, const uint8_t, nanobind::ndim<1>, nanobind::c_contig>;
// Writable raw bytes of memory Python owns (a torch.empty the core reads into).
using RawInOut = nanobind::ndarray<uint8_t, nanobind::ndim<1>, nanobind::c_contig,
                                   nanobind::device::cpu>;

// A view of Python-owned bytes as a tensor. Throws Error(InvalidArgument) naming `name` when the
// dtype is unknown or the byte count does not match dtype x shape.
TensorView view_of(const std::string& name, const std::string& dtype, const Shape& shape,
                   const RawIn& raw);

// The tensor's bytes as a numpy uint8 array that owns a reference to the tensor (no copy): a
// RawOut, or a RawOutReadOnly for a memory-mapped tensor.
nanobind::object raw_of(const Tensor& tensor);

}  // namespace ckptio::python
