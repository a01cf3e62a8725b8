"""The causal language-model loss, computed only where there are labels.

The body runs once; the vocabulary projection (``lm_head``) runs only on positions that carry a
label, so prompt tokens cost no ``lm_head`` work. When there are many labelled positions the
projection runs in chunks that are recomputed in the backward pass, so at most one chunk of
logits (rows × vocabulary) is alive at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from tuneforge.model.adapters import decoder_and_head

IGNORE_INDEX = -100
LOGITS_CHUNK_ROWS = 2048


@dataclass
class LossSums:
    """Sums over a batch, so several batches can be combined exactly (token-level averaging)."""

    loss_sum: torch.Tensor  # differentiable sum of token losses
    tokens: int  # labelled tokens
    correct: int  # tokens whose argmax prediction equals the label


def label_loss_sums(model: Any, batch: dict[str, torch.Tensor]) -> LossSums:
    """Summed cross-entropy and correct-prediction count over the labelled positions of ``batch``."""
    decoder, head = decoder_and_head(model)
    # Padded batches carry attention_mask; packed ones position_ids and cu_seq_lens (see model.attention).
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    hidden = decoder(**inputs).last_hidden_state
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    rows = hidden[:, :-1][mask]
    wanted = targets[mask]
    def chunk_sums(chunk_rows: torch.Tensor, chunk_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = head(chunk_rows).float()
        loss = F.cross_entropy(logits, chunk_targets, reduction="sum")
        return loss, (logits.detach().argmax(-1) == chunk_targets).sum()

    recompute = torch.is_grad_enabled() and rows.shape[0] > LOGITS_CHUNK_ROWS
    loss_sum = hidden.new_zeros(())
    correct = 0
    for start in range(0, rows.shape[0], LOGITS_CHUNK_ROWS):
        args = (rows[start : start + LOGITS_CHUNK_ROWS], wanted[start : start + LOGITS_CHUNK_ROWS])
        if recompute:
            loss, hits = torch.utils.checkpoint.checkpoint(chunk_sums, *args, use_reentrant=False)
        else:
            loss, hits = chunk_sums(*args)
        loss_sum = loss_sum + loss
        correct += int(hits)
    return LossSums(loss_sum, int(wanted.numel()), correct)


@torch.no_grad()
def mean_label_loss(model: Any, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Token-level mean loss, next-token accuracy and perplexity over ``batches`` (model put in eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, tokens, correct = 0.0, 0, 0
    for batch in batches:
        sums = label_loss_sums(model, {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()})
        loss_sum += float(sums.loss_sum)
        tokens += sums.tokens
        correct += sums.correct
    model.train(was_training)
    loss = loss_sum / max(tokens, 1)
    return {"loss": loss, "accuracy": correct / max(tokens, 1), "perplexity": perplexity(loss)}


def perplexity(loss: float) -> float:
    """exp(loss), or inf where that overflows."""
    return math.exp(loss) if loss < 50 else float("inf")
