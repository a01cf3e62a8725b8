"""``sft``: supervised fine-tuning, the next-token cross-entropy on the labelled (answer) tokens.

The fused path of ``model/loss.py``: the head runs only on labelled positions, chunked and fused
with the loss, so no full logits tensor is ever built.
"""

from __future__ import annotations

from typing import Any

from tuneforge.core.registries import OBJECTIVES
from tuneforge.model.loss import LossSums, label_loss_sums


def sft(model: Any, batch: dict[str, Any], *, through_wrapper: bool = False) -> LossSums:
    """Summed cross-entropy over ``batch``'s labels (``IGNORE_INDEX`` positions excluded)."""
    return label_loss_sums(model, batch, through_wrapper)


OBJECTIVES.register("sft", sft)
