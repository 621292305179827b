// The security-review surface of the unpickler: the only globals a pickle may name (a fixed
// table; nothing is looked up dynamically), and what "calling" or instantiating each of them
// builds. Nothing from the file is ever run: each rebuild reads its arguments out of the arena,
// checks them (tensor views against their storage) and makes plain objects.
#pragma once

#include <optional>
#include <string>

#include "format/torch/pickle_objects.h"

namespace ckptio::pt::pickle {

// The name torch gives a dtype ("float32").
std::string torch_dtype_name(DType dtype);

class ObjectBuilder : protected PickleObjects {
 protected:
  ObjectBuilder(std::string_view source, uint64_t pickle_size, const StorageResolver& resolve,
                const UnpickleOptions& options)
      : PickleObjects(source, pickle_size, options), resolve_(resolve) {}

  // GLOBAL / STACK_GLOBAL: an allow-listed name, else Error(Unsafe) naming it.
  uint32_t global(std::string_view module, std::string_view name);
  // REDUCE: callable(*args) for an allow-listed callable.
  uint32_t call(uint32_t callable, uint32_t args);
  // NEWOBJ / NEWOBJ_EX (keyword arguments already refused): cls.__new__(cls, *args).
  uint32_t new_object(uint32_t cls, uint32_t args);
  // BUILD: state for `target`: a DCP object's fields are set from it; dropped for tensors and
  // dicts; any other target is Error(Unsafe).
  void build(uint32_t target, uint32_t state);
  // BINPERSID: a storage reference, resolved by the container.
  uint32_t persistent_load(uint32_t pid);

 private:
  uint32_t rebuild_tensor(uint32_t storage_obj, uint32_t offset_obj, uint32_t size_obj,
                          uint32_t stride_obj, bool requires_grad, std::optional<DType> dtype);

  const StorageResolver& resolve_;
};

}  // namespace ckptio::pt::pickle
