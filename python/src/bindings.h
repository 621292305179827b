// One function per area registers its part of ckptio._core; module.cpp calls them in order.
#pragma once

#include <nanobind/nanobind.h>

namespace ckptio::python {

// Error translation: every ckptio::Error becomes the ckptio.errors class for its code.
void bind_errors(nanobind::module_& m);
// DType names, tensors in and out (DLPack / buffer protocol), safetensors read/write.
void bind_safetensors(nanobind::module_& m);
// CheckpointIO, load_checkpoint, torch-file reading, sharded saves.
void bind_checkpoint(nanobind::module_& m);
// Distributed checkpoints: save/read over a Python-implemented communicator, DCP box reads.
void bind_dist(nanobind::module_& m);

}  // namespace ckptio::python
