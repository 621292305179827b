#include "strict_weights.h"

#include <vector>

#include "ckptio/load.h"

namespace demo {

std::string load_weights_strict(const std::filesystem::path& source,
                                std::map<std::string, ckptio::Tensor>& targets) {
  std::vector<ckptio::LoadTarget> requests;
  requests.reserve(targets.size());
  for (auto& [name, tensor] : targets) {
    requests.push_back({name, tensor.dtype(), tensor.shape(), tensor.mutable_bytes()});
  }
  ckptio::LoadOptions options;
  options.strict = true;
  options.convert_dtype = false;
  options.source.weights = ckptio::WeightsChoice::Ema;
  const ckptio::LoadReport report = ckptio::load_checkpoint(source, requests, options);
  return report.summary() + " [" + report.source.how + "]";
}

}  // namespace demo
