"""Gradient accumulation: the forward and backward passes of one optimizer step's group of batches.

The micro-batches of one accumulation group are summed with token-level normalisation (every
labelled token weighs the same, whatever batch it is in), so the accumulated gradient equals one
pass over the whole group. ``accumulate_gradients`` is the whole per-step compute of training,
shared by the loop (train/loop.py) and the training-time estimate (train/estimate.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tuneforge.config import FineTuningConfig
from tuneforge.data.batching import collate, collate_packed, real_tokens, split_into_passes
from tuneforge.model.loss import LossSums, add_metric_sums
from tuneforge.model.precision import forward_context
from tuneforge.model.saved_recipes import saving_recipes
from tuneforge.train import distributed, fsdp


def training_loss_sums(loss_sums: Callable[[Any, dict[str, Any]], LossSums], model: Any, batch: dict[str, Any]) -> LossSums:
    """The loss sums of one training pass, as the run's objective computes them.

    The loop's only loss call, kept module-level so that tests inject faults (NaN, spikes,
    exploding gradients) in one place whatever the objective: patch
    ``tuneforge.train.accumulation.training_loss_sums``.
    """
    return loss_sums(model, batch)


@dataclass
class GroupSums:
    """What the forward/backward passes of one accumulation group added up to."""

    loss_sum: float  # summed loss over the group's labelled tokens
    correct: int  # labelled tokens predicted right
    trained_tokens: int  # labelled tokens (the loss is divided by this)
    processed_tokens: int  # real, non-padding tokens through the model
    metrics: dict[str, float] = field(default_factory=dict)  # the objective's metric sums (LossSums.metrics)


def accumulate_gradients(model: Any, group: list[list[Any]], config: FineTuningConfig,
                         loss_sums: Callable[[Any, dict[str, Any]], LossSums], precision: str, pad_token_id: int,
                         device: str, total_tokens: int | None = None, filler: list[Any] | None = None) -> GroupSums:
    """Forward and backward over one accumulation group (``group``: batches of encoded examples).

    The batches are packed or padded as the config says and split into passes of at most
    ``micro_batch_tokens``; gradients are accumulated with token-level normalisation, so they equal
    one pass over the whole group. This is the whole per-step compute of training, shared with the
    training-time estimate (train/estimate.py) so that it measures exactly what training runs.
    ``total_tokens`` is what the summed loss is divided by: the labelled tokens of the global group
    when this process trains only its share of it (train/distributed.py); default: ``group``'s own.
    ``filler`` (FSDP, where every pass is a collective): this process adds zero-weight passes over
    these items until it has made as many passes as the busiest process.
    """
    trained_tokens = total_tokens if total_tokens is not None else sum(item.trained_tokens for batch in group for item in batch)
    loss_sum, correct, processed = 0.0, 0, 0
    metrics: dict[str, float] = {}
    passes = [part for batch in group for part in split_into_passes(batch, config.micro_batch_tokens, config.packing)]
    if filler is not None:
        passes += [None] * fsdp.filler_passes(len(passes))
    for batch_items in passes:
        filling = batch_items is None
        batch = collate_packed(batch_items or filler) if config.packing else collate(batch_items or filler, pad_token_id)
        batch = _to_device(batch, device)
        # Saved-tensor recipes (model/saved_recipes.py) around the one training forward; not under FSDP, whose
        # resharding frees and regathers the parameters a recipe would read.
        with forward_context(model, precision), saving_recipes(enabled=False if config.distributed == "fsdp" else None):
            sums = training_loss_sums(loss_sums, model, batch)
        if filling:  # the collectives of a pass, nothing of its loss
            (sums.loss_sum * 0.0).backward()
            continue
        (sums.loss_sum / trained_tokens).backward()
        loss_sum += float(sums.loss_sum.detach())
        correct += sums.correct
        processed += real_tokens(batch)
        add_metric_sums(metrics, sums.metrics)
    return GroupSums(loss_sum, correct, trained_tokens, processed, metrics)


def metric_sums_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """An objective's metric sums added over every process (a process with an empty share has none)."""
    total: dict[str, float] = {}
    for part in distributed.gather_objects(metrics):
        add_metric_sums(total, part or {})
    return total


def _to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
