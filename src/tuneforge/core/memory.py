"""Memory use of this process: current and peak resident set size (and GPU memory when on a GPU), and what the
machine still has free for it (``available_memory_mb``: MemAvailable, capped by a cgroup limit).

``peak_memory_mb()`` is the process's lifetime peak. ``PeakMemory`` measures the peak of one span
of code (an evaluation, say), which the lifetime peak cannot tell once training has run before it.
"""

from __future__ import annotations

import functools
import math
import re
import resource
import sys
import threading
from pathlib import Path
from typing import Any

_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


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
    torch = sys.modules.get("torch")  # not imported: this process has no GPU memory (and importing it costs 200 MB)
    if torch is not None and torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return round(torch.cuda.max_memory_allocated() / 1e6, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    # A PeakMemory span resets the kernel's mark, which ru_maxrss reads: keep what was seen before.
    return round(max(peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6, _peak_before_resets_mb), 1)


def _high_water_mb() -> float | None:
    """The kernel's resident high-water mark (VmHWM) in MB, or None where /proc does not have it."""
    try:
        with open(_PROC_STATUS) as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError, IndexError):
        return None
    return None


_peak_before_resets_mb = 0.0


def _reset_high_water() -> bool:
    """Set VmHWM back to the current RSS (Linux ``clear_refs`` 5); False where that is not possible.

    The mark reached so far is kept for ``peak_memory_mb`` (the lifetime peak) first.
    """
    global _peak_before_resets_mb
    _peak_before_resets_mb = max(_peak_before_resets_mb, _high_water_mb() or 0.0)
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


_open_spans: list["PeakMemory"] = []
_spans_lock = threading.Lock()


class PeakMemory:
    """The peak memory of the code run inside ``with PeakMemory(device) as span:``; ``span.peak_mb`` after it.

    On a CUDA ``device``: the peak GPU memory allocated during the span (the allocator's peak is
    reset when it starts). On the CPU: the peak resident set size during the span. On Linux that is
    exact: the kernel's high-water mark is reset when the span starts (``/proc/self/clear_refs``) and
    read when it ends; spans may nest (a reset first hands the peak so far to the spans still open).
    Elsewhere, or with ``sample=True``, a background thread samples the resident size every
    ``interval`` seconds (a spike shorter than that can be missed).
    """

    def __init__(self, device: Any = "cpu", sample: bool = False, interval: float = 0.01) -> None:
        self.cuda = str(device).startswith("cuda")
        self.sample = sample
        self.interval = interval
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = self.peak_mb = torch.cuda.memory_allocated() / 1e6
            return self
        self.start_mb = self.peak_mb = current_memory_mb()
        if not self.sample and _high_water_mb() is not None:
            with _spans_lock:
                self._hand_peak_to_open_spans()
                if _reset_high_water():
                    _open_spans.append(self)
                    return self
        self.sample = True
        self._thread = threading.Thread(target=self._sample, name="tuneforge-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak_mb = max(self.peak_mb, torch.cuda.max_memory_allocated() / 1e6)
        elif self.sample:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mb = max(self.peak_mb, current_memory_mb())
        else:
            with _spans_lock:
                self._hand_peak_to_open_spans()
                _open_spans.remove(self)
        self.peak_mb = round(self.peak_mb, 1)

    @staticmethod
    def _hand_peak_to_open_spans() -> None:
        """Give every open span the high-water mark reached so far (before it is reset or read for the last time)."""
        peak = _high_water_mb()
        if peak is not None:
            for span in _open_spans:
                span.peak_mb = max(span.peak_mb, peak)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, current_memory_mb())


def parse_memory_size(text: str | float | int) -> float:
    """``12GB``, ``12000MB``, ``1.5TB``, ``512KB`` (``GiB`` etc. read alike) or a bare number of GB, in MB.

    ``ValueError`` on anything else, and on sizes that are not positive.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "g"
    else:
        match = _MEMORY_SIZE.fullmatch(str(text).strip().lower())
        if not match:
            raise ValueError(f"not a memory size: {text!r}")
        value, unit = float(match.group(1)), match.group(2) or "g"
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return value * {"k": 1e-3, "m": 1.0, "g": 1e3, "t": 1e6}[unit]


_MEMORY_SIZE = re.compile(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt])?(?:i?b)?")


def available_memory_mb() -> float | None:
    """Memory this process could still get, in MB: the kernel's MemAvailable, capped by a cgroup limit; None if unknown."""
    available = _meminfo_mb("MemAvailable")
    cgroup = _cgroup_room_mb()
    candidates = [value for value in (available, cgroup) if value is not None]
    return min(candidates) if candidates else None


def _meminfo_mb(key: str) -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room_mb() -> float | None:
    """What the cgroup (v2) limit leaves: memory.max − memory.current; None without a limit."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        current = int((base / "memory.current").read_text().strip())
        return max(0.0, (int(limit) - current) / 1e6)
    except (OSError, ValueError):
        return None


_MADV_DONTNEED = 4  # Linux <sys/mman.h>


def file_mappings() -> list[tuple[int, int]]:
    """The (start, end) address ranges of this process's mappings of regular files (Linux; [] elsewhere).

    A memory-mapped safetensors file is one (private, copy-on-write): transformers' fp32 weights point
    into it and are read from the file lazily.
    """
    ranges = []
    try:
        with open("/proc/self/maps") as handle:
            for line in handle:
                fields = line.split(maxsplit=5)
                if len(fields) < 6:
                    continue
                path = fields[5].strip()
                if path.startswith("/") and not path.endswith("(deleted)"):
                    start, end = (int(part, 16) for part in fields[0].split("-"))
                    ranges.append((start, end))
    except (OSError, ValueError):
        return []
    return ranges


def release_file_pages(address: int, length: int, mappings: list[tuple[int, int]] | None = None) -> int:
    """Drop from the resident set the whole pages of ``[address, address + length)`` when they lie in one mapping
    of a file (``file_mappings``; read now when not given); return the bytes released (0: nothing done).

    For the caller whose data that range is and who no longer needs it: a weight read from a mapped
    safetensors file and since converted (quantized), whose pages would otherwise stay resident, counted
    in the process's RSS, as long as anything else keeps the file mapped. A later read of the range gets
    the file's bytes again (pages of a private mapping this process wrote are discarded). Only whole
    pages inside the range are dropped, so a neighbour sharing its first or last page is untouched;
    anonymous memory is never touched (dropping it would zero it).
    """
    if not sys.platform.startswith("linux") or length <= 0:
        return 0
    page = resource.getpagesize()
    start = -(-address // page) * page  # whole pages inside the range only
    end = (address + length) // page * page
    if end <= start:
        return 0
    ranges = file_mappings() if mappings is None else mappings
    if not any(low <= start and end <= high for low, high in ranges):
        return 0
    return end - start if _madvise()(start, end - start, _MADV_DONTNEED) == 0 else 0


@functools.lru_cache(maxsize=1)
def _madvise() -> Any:
    """libc's ``madvise``, typed (looked up once: a quantized model calls it once a layer)."""
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise
