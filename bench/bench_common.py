"""What every bench records about the machine and its noise: CPU, cores, memory, versions, matmul peaks, CPU steal.

Imported by the bench scripts (run as ``python bench/<name>.py``, so ``bench/`` is on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def cpu_steal() -> tuple[int, int]:
    """(steal, total) jiffies from /proc/stat; (0, 0) where there is none."""
    try:
        with open("/proc/stat", encoding="utf-8") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of all CPU time the hypervisor gave to other guests between two readings."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total > 0 else 0.0


def matmul_peak_gflops(dtype_name: str, repeats: int = 20) -> float:
    """Best GFLOP/s of [4096×576]·[576×1536] in ``dtype_name`` on this machine (the shape of SmolLM2's MLP)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(4096, 576, device=device, dtype=dtype)
    b = torch.randn(576, 1536, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 4096 * 576 * 1536 / best / 1e9


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


ISA_FLAGS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_isa(cpuinfo: str | None = None) -> str:
    """The widest matrix instructions the CPU reports ("AMX-BF16", "AVX512-BF16", "AVX-512", "AVX2" or "none"): CPUs of
    one model name differ (an AMD EPYC here was AVX2-only one day, AVX512-BF16 another), and the limits with them.
    ``cpuinfo``: the text of /proc/cpuinfo (read when not given)."""
    from tuneforge.model.precision import cpu_flags

    present = cpu_flags(cpuinfo)
    return next((label for flag, label in ISA_FLAGS if flag in present), "none")


def cpu_label(machine: dict[str, Any]) -> str:
    """A run's CPU as its tables name it: the model name, with the widest matrix instructions where recorded."""
    return f"{machine['cpu']}, {machine['cpu_isa']}" if machine.get("cpu_isa") else machine["cpu"]


def machine() -> dict[str, Any]:
    import torch

    cpu = cpu_model()
    from tuneforge.model.precision import cpu_has_native_bf16

    info = {"load_average_at_start": round(os.getloadavg()[0], 2), "cpu": cpu, "cpu_isa": cpu_isa(), "native_bf16": torch.cuda.is_available() or cpu_has_native_bf16(), "cores": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for name in ("transformers", "peft", "trl"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = "not installed"
    return info


RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, report: Any, text: str, write: bool = True) -> None:
    """Print ``text`` (the markdown section); unless ``write`` is False, save ``report`` as ``results/<name>.json``
    and ``text`` as ``results/<name>.md`` (bench/write_benchmarks.py places it in BENCHMARKS.md)."""
    import json

    print(text)
    if not write:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
