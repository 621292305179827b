"""The machine condition that moves the figures more than any code change does: free page
reporting (see bench/common/machine.h, which the C++ benchmarks print the same way)."""
from typing import Optional

ORDER_PARAMETER = "/sys/module/page_reporting/parameters/page_reporting_order"
LARGEST_BLOCK_ORDER = 10  # x86-64 MAX_PAGE_ORDER: a higher reporting order reports nothing


def free_page_reporting_order() -> Optional[int]:
    try:
        with open(ORDER_PARAMETER) as f:
            order = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return order if 0 <= order <= LARGEST_BLOCK_ORDER else None


def memory_note() -> str:
    order = free_page_reporting_order()
    if order is None:
        return ""
    return (f"Memory: free page reporting is on (blocks of {4 << order} KiB freed by the kernel go "
            "back to the hypervisor and are faulted in on the host at their next use), so the cost "
            "of fresh memory (new files' page cache, new buffers) swings from run to run and so do "
            f"the ratios. For steady figures, as root: `echo 11 > {ORDER_PARAMETER}` for the run, "
            f"then restore {order}.")
