"""What this machine has for new work: available memory, and this process's peak memory.

Steps that hold a size's data in one process (the generator, the local training engine) check
their estimate against these before they start, so a size the machine cannot hold fails early
with the memory it needs rather than with the kernel's out-of-memory kill.
"""

from __future__ import annotations

import resource
from pathlib import Path


def available_memory_bytes() -> int | None:
    """The memory the kernel says new work can use (``MemAvailable``), if it says."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_memory_bytes() -> int:
    """This process's peak resident memory so far (Linux reports ``ru_maxrss`` in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def gib(size: int) -> str:
    """A byte count in GiB, one decimal."""
    return f"{size / 2**30:.1f} GiB"
