"""Memory use of this process: current and peak resident set size (and GPU memory when on a GPU)."""

from __future__ import annotations

import resource
import sys


def current_memory_mb() -> float:
    """Resident memory now, in MB (Linux /proc; elsewhere the peak)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return round(pages * resource.getpagesize() / 1e6, 1)
    except OSError:
        return peak_memory_mb()


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB; on a GPU, the peak GPU memory allocated."""
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return round(torch.cuda.max_memory_allocated() / 1e6, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1e6 if sys.platform == "darwin" else peak / 1e3, 1)
