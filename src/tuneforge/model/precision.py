"""Which number format training computes in, and detecting CPUs that do bf16 natively.

On CPUs without native bf16 (AVX2-only machines) bf16 matrix multiplies are many times slower
than fp32, so fp32 is the only sane choice there. CPUs with AMX or AVX512-BF16 multiply bf16 several
times faster than fp32; there ``auto`` picks bf16 autocast (weights and optimizer stay fp32).
"""

from __future__ import annotations

import contextlib
from typing import Any


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16`` for ``precision`` in (auto, fp32, bf16) on ``device``."""
    if precision != "auto":
        return precision
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: str) -> Any:
    """A context that runs the forward pass in bf16 autocast, or does nothing for fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device, dtype=torch.bfloat16)
