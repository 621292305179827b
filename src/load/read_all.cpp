#include "load/read_all.h"

#include "core/executor.h"
#include "load/checked_convert.h"

namespace ckptio::detail {

ReadAllResult read_all_tensors(const CheckpointReader& reader, std::optional<DType> dtype,
                               int threads, bool allow_overflow) {
  const auto& infos = reader.tensors();
  ReadAllResult out;
  out.tensors.resize(infos.size());
  std::vector<bool>& convert = out.converted;
  convert.assign(infos.size(), false);
  for (size_t i = 0; i < infos.size(); ++i) {
    convert[i] = dtype && infos[i].dtype != *dtype && dtype_is_float(infos[i].dtype) &&
                 can_convert(infos[i].dtype, *dtype);
  }
  parallel_for(infos.size(), thread_count(threads, infos.size()), [&](size_t i) {
    Tensor t = reader.tensor(infos[i].name);
    if (convert[i]) {
      Tensor c = Tensor::empty(*dtype, t.shape());  // every element is written below
      convert_checked(t.dtype(), t.bytes().data(), *dtype, c.mutable_bytes().data(), t.numel(),
                      infos[i].name, allow_overflow);
      t = std::move(c);
    }
    out.tensors[i] = std::move(t);
  });
  return out;
}

}  // namespace ckptio::detail
