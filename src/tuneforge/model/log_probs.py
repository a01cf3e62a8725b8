"""Per-sequence log-probabilities of the labelled (answer) tokens: what pairwise objectives (DPO, ORPO) and the
preference evaluation compare between a chosen and a rejected answer."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tuneforge.model.loss import labelled_hidden_rows

# Labelled rows projected to the vocabulary at a time: one chunk of logits (rows × vocabulary, fp32) is
# alive at once; under autograd each chunk is recomputed in the backward pass instead of being kept.
LOGPROB_CHUNK_ROWS = 256


def sequence_log_probs(model: Any, batch: dict[str, torch.Tensor], through_wrapper: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(label) over each row's labelled tokens, labelled tokens per row), shape (rows,) each.

    As ``label_loss_sums``: the decoder body runs once (through the wrapper's ``forward`` when
    ``through_wrapper``), the head only on labelled positions, in checkpointed chunks.
    """
    head, rows, wanted, mask = labelled_hidden_rows(model, batch, through_wrapper)
    pieces = []
    for start in range(0, rows.shape[0], LOGPROB_CHUNK_ROWS):
        chunk, labels = rows[start : start + LOGPROB_CHUNK_ROWS], wanted[start : start + LOGPROB_CHUNK_ROWS]
        if torch.is_grad_enabled() and chunk.requires_grad:
            pieces.append(checkpoint(_token_log_probs, head, chunk, labels, use_reentrant=False))
        else:
            pieces.append(_token_log_probs(head, chunk, labels))
    token_logps = torch.cat(pieces) if pieces else rows.new_zeros(0, dtype=torch.float32)
    owner = mask.nonzero(as_tuple=True)[0]
    sums = torch.zeros(mask.shape[0], dtype=torch.float32, device=rows.device).index_add(0, owner, token_logps)
    return sums, mask.sum(dim=1)


def _token_log_probs(head: Any, rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(head(rows).float(), labels, reduction="none")
