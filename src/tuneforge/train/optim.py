"""Optimizer and learning-rate schedule: AdamW, warmup then cosine, linear or constant."""

from __future__ import annotations

import math
from typing import Any

import torch


def build_optimizer(model: Any, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norm scales (1-D tensors)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int) -> Any:
    """transformers' schedule of that name (``constant`` keeps the warmup)."""
    from transformers import get_scheduler

    name = "constant_with_warmup" if kind == "constant" else kind
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def plan_steps(n_batches: int, accumulation: int, epochs: float, max_steps: int | None) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for a run."""
    per_epoch = max(1, math.ceil(n_batches / accumulation))
    total = max(1, math.ceil(per_epoch * epochs))
    return per_epoch, min(total, max_steps) if max_steps else total


def default_warmup(total_steps: int) -> int:
    """10% of the steps, the usual choice for short fine-tuning runs."""
    return int(round(total_steps * 0.1))
