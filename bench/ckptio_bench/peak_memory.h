// Peak resident-memory growth of a piece of work, from /proc/self/status after resetting the
// high-water mark through /proc/self/clear_refs.
#pragma once

#include <functional>
#include <optional>

namespace ckptio::bench {

// MiB by which VmHWM rose above the RSS before fn; nullopt where the kernel does not allow it.
std::optional<double> peak_extra_mib(const std::function<void()>& fn);

}  // namespace ckptio::bench
