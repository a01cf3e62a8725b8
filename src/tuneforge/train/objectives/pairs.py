"""What the pairwise objectives (``dpo``, ``orpo``) share: per-sequence log-probabilities of the labelled
(answer) tokens, the reference model as the base with the adapter switched off, and the metric sums.

A pairwise batch is ``collate`` of ``EncodedPair`` items: 2N rows, the N chosen sequences first, then
the N rejected ones in the same order (TRL's layout), each labelled on its answer only.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from tuneforge.core.errors import TrainingError
from tuneforge.model.log_probs import sequence_log_probs

__all__ = ["preference_metrics", "reference_model", "sequence_log_probs", "split_pairs"]


def split_pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) halves of a pairwise batch's per-row values."""
    if values.shape[0] % 2:
        raise TrainingError("a pairwise objective got a batch that is not chosen/rejected pairs; train it on preference "
                            "data (rows with chosen and rejected answers)")
    half = values.shape[0] // 2
    return values[:half], values[half:]


@contextmanager
def reference_model(model: Any) -> Iterator[None]:
    """``model`` as the reference: the base with the adapter switched off (PEFT ``disable_adapter``), no copy."""
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        raise TrainingError("DPO's reference model is the base with the adapter switched off, and this model has no "
                            "adapter to switch off; train with an adapter method (--method lora), or use --objective orpo")
    with torch.no_grad(), disable():
        yield


def preference_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, chosen_logps: torch.Tensor,
                       rejected_logps: torch.Tensor) -> tuple[int, dict[str, float]]:
    """(pairs ranked right, metric sums) for ``LossSums``: rewards (chosen, rejected, margin), accuracy, log-probs."""
    correct = int((chosen_rewards > rejected_rewards).sum())
    return correct, {
        "reward_chosen": float(chosen_rewards.sum()), "reward_rejected": float(rejected_rewards.sum()),
        "reward_margin": float((chosen_rewards - rejected_rewards).sum()), "preference_accuracy": float(correct),
        "logp_chosen": float(chosen_logps.detach().sum()), "logp_rejected": float(rejected_logps.detach().sum()),
    }
