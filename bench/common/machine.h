// Conditions of this machine that move the figures more than any code change does, so that every
// report says under which ones it was measured.
//
// Free page reporting (virtio-balloon, Linux's page_reporting): the guest hands blocks of freed
// memory back to the hypervisor, and the next use of such a block faults it in on the host again.
// On such a VM, the cost of fresh memory (the page cache of a new file, a new buffer) depends on
// which pages the kernel happens to hand out: a durable 2 GiB save measured 0.7 s or 5 s with the
// same code. The limits and ckptio both allocate fresh memory, so their ratio swings with it.
#pragma once

#include <optional>
#include <string>

namespace ckptio::bench {

// The reporting order when free page reporting is active (blocks of 2^order pages are reported),
// nullopt when it is off or absent. Orders above the kernel's largest block report nothing.
std::optional<int> free_page_reporting_order();

// One line for the report's context: what is on, what that does to the figures, how to turn it
// off for steady figures (as root, restored afterwards). Empty when nothing applies.
std::string machine_memory_note();

}  // namespace ckptio::bench
