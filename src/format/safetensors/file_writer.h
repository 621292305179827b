// The one safetensors file writer. save_safetensors, save_sharded and CheckpointIO all fill their
// files here: the header and every tensor, straight from the callers' buffers, through one
// io::AsyncWriter shared by all the files of a call.
#pragma once

#include <span>

#include "ckptio/async_writer.h"
#include "ckptio/io.h"
#include "ckptio/safetensors.h"

namespace ckptio::detail {

// One open file to fill with the layout plan_safetensors made for `tensors`.
struct SafetensorsFileJob {
  io::WritableFile* file = nullptr;
  const SafetensorsLayout* layout = nullptr;
  std::span<const NamedTensor> tensors;
};

struct SafetensorsFileWriteOptions {
  io::Env* env = nullptr;  // nullptr: Env::posix()
  // fsync every file before returning.
  bool sync = true;
  // Backend, threads, O_DIRECT, bytes in flight; nullptr: the defaults. Its env and sync fields
  // are ignored (the two above decide).
  const io::AsyncWriterOptions* tuning = nullptr;
  // The caller fsyncs the files itself afterwards (write_file_atomic): their writeback starts
  // early as when `sync` is set (unless tuning says otherwise).
  bool synced_by_caller = false;
};

// Writes every job's file completely (small tensors gathered into a few large writes, large ones
// borrowed from the caller's memory) and, with `sync`, fsyncs them. Throws the first error,
// naming the file, the tensor and the byte offset. The files stay open (their owners close them).
void write_safetensors_files(std::span<const SafetensorsFileJob> jobs,
                             const SafetensorsFileWriteOptions& options);

}  // namespace ckptio::detail
