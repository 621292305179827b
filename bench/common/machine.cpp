#include "common/machine.h"

#include <fstream>

#include <fmt/core.h>

namespace ckptio::bench {
namespace {

constexpr const char* kOrderParameter = "/sys/module/page_reporting/parameters/page_reporting_order";
// MAX_PAGE_ORDER of x86-64 kernels: blocks above it do not exist, so no block is reported.
constexpr int kLargestBlockOrder = 10;

}  // namespace

std::optional<int> free_page_reporting_order() {
  std::ifstream in(kOrderParameter);
  int order = -1;
  if (!(in >> order) || order < 0 || order > kLargestBlockOrder) return std::nullopt;
  return order;
}

std::string machine_memory_note() {
  const std::optional<int> order = free_page_reporting_order();
  if (!order) return "";
  return fmt::format(
      "Memory: free page reporting is on (blocks of {} KiB freed by the kernel go back to the "
      "hypervisor and are faulted in on the host at their next use), so the cost of fresh memory "
      "(new files' page cache, new buffers) swings from run to run and so do the ratios. For steady "
      "figures, as root: `echo 11 > {}` for the run, then restore {}.",
      (4 << *order), kOrderParameter, *order);
}

}  // namespace ckptio::bench
