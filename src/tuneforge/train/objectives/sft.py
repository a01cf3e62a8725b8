"""``sft``: supervised fine-tuning, the next-token cross-entropy on the labelled (answer) tokens.

The fused path of ``model/loss.py``: the head runs only on labelled positions, chunked and fused
with the loss, so no full logits tensor is ever built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import OBJECTIVES

if TYPE_CHECKING:
    from tuneforge.model.loss import LossSums


def sft(model: Any, batch: dict[str, Any], *, through_wrapper: bool = False) -> LossSums:
    """Summed cross-entropy over ``batch``'s labels (``IGNORE_INDEX`` positions excluded)."""
    from tuneforge.model.loss import label_loss_sums  # here, not at import: looking ``sft`` up needs no torch

    return label_loss_sums(model, batch, through_wrapper)


OBJECTIVES.register("sft", sft)
