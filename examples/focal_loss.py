"""A user-defined training loss for tuneforge: the focal loss (Lin et al., 2017) on the answer tokens.

Focal loss scales each token's cross-entropy by (1 − p)^γ, where p is the probability the model gives
the right token: tokens the model already gets right weigh less, hard ones more. γ = 0 is plain SFT.

Use it with no change to tuneforge (the folder holding this file must be importable)::

    PYTHONPATH=examples tuneforge finetune --data train.jsonl --objective focal_loss:focal_loss

The protocol (docs/SEAMS.md, "Training objectives"): a callable ``(model, batch, *, through_wrapper)``
that runs the model on the collated ``batch`` (``input_ids``, ``attention_mask``, ``labels`` with
-100 where no loss is taken) and returns ``(loss, metrics)``: a scalar tensor, the mean over the
batch's labelled tokens, and a dict of numbers to log. Every metric appears in each ``train.step``
event of ``RUN_DIR/events.jsonl`` (and as ``validation_<name>`` in ``eval.result``).
"""

from __future__ import annotations

from typing import Any

import torch

from tuneforge.model.loss import label_logits

GAMMA = 2.0


def focal_loss(model: Any, batch: dict[str, torch.Tensor], *, through_wrapper: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mean focal loss over the labelled tokens, plus the plain cross-entropy and the mean p(answer) to log."""
    logits, labels = label_logits(model, batch, through_wrapper)  # only the labelled positions, fp32
    log_p = torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    p = log_p.exp()
    loss = -((1 - p) ** GAMMA * log_p).mean()
    return loss, {"cross_entropy": -log_p.detach().mean(), "p_answer": p.detach().mean()}
