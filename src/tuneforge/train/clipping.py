"""Gradient clipping: the global norm of the trainable parameters' gradients, clipped to ``max_grad_norm``."""

from __future__ import annotations

from typing import Any

import torch


def clip_gradients(model: Any, max_norm: float | None) -> float:
    """Clip the gradients of ``model`` in place to a global norm of ``max_norm`` (None or 0: no clipping).

    Returns the norm before clipping (0.0 when no parameter has a gradient), the loop's ``grad_norm``.
    """
    parameters = [p for p in model.parameters() if p.grad is not None]
    if not parameters:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
