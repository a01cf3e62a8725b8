"""Which number format training computes in, and detecting CPUs that do bf16 natively.

On CPUs without native bf16 (AVX2-only machines) bf16 matrix multiplies are many times slower
than fp32, so fp32 is the only sane choice there. CPUs with AMX or AVX512-BF16 (and GPUs) multiply
bf16 several times faster than fp32; there ``auto`` picks bf16.

What bf16 means depends on what is trained (the method's ``freezes_base`` decides):
- LoRA (frozen base): the frozen base weights are *stored* in bf16 (half the memory, no per-step casts) and the
  model computes in bf16, while the adapter weights, their gradients and the optimizer state stay
  fp32 (PEFT keeps adapters in fp32; ``fast_lora`` casts them down only for the multiplies).
- Full fine-tuning (trained base): the weights stay fp32 (bf16 weights would round small updates away) and the
  forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import contextlib
from typing import Any


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags the CPU reports (the first ``flags`` line of /proc/cpuinfo, or of ``cpuinfo``);
    empty where there is none."""
    try:
        if cpuinfo is None:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpuinfo = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return frozenset(line.split(":", 1)[-1].split())


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def resolve_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16`` for ``precision`` in (auto, fp32, bf16) on ``device``."""
    if precision != "auto":
        return precision
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def base_weight_dtype(precision: str, method: Any) -> Any:
    """The dtype to load the base model in: bf16 where the method freezes it and ``precision`` is bf16, else fp32.

    ``precision`` is a resolved one (``fp32`` or ``bf16``); ``method`` a ``TrainingMethod`` or its
    registered name. The method decides (``TrainingMethod.base_dtype``).
    """
    if isinstance(method, str):
        from tuneforge.core.registries import METHODS

        method = METHODS.get(method)
    return method.base_dtype(precision)


def forward_context(model: Any, precision: str) -> Any:
    """The context a training forward pass runs in: bf16 autocast where bf16 is asked for but the
    weights are fp32 (full fine-tuning), else nothing (fp32, or weights already stored in bf16)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    weight = next((p for p in model.parameters() if p.dim() == 2 and p.dtype.is_floating_point), None)
    if weight is None or weight.dtype == torch.bfloat16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=weight.device.type, dtype=torch.bfloat16)
