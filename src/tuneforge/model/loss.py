"""The causal language-model loss, computed only where there are labels.

The body runs once; the vocabulary projection (``lm_head``) runs only on positions that carry a
label, so prompt tokens cost no ``lm_head`` work. Projection and cross-entropy are fused
(``LinearCrossEntropy``): chunk by chunk, the logits, their log-sum-exp, the loss and the gradient
with respect to the hidden states (softmax − one-hot, times the head) are computed in the forward
pass, and only that n × hidden gradient is kept. So one chunk of logits (rows × vocabulary) is
alive at a time, nothing is recomputed, and the backward pass only scales the stored gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from tuneforge.model.adapters import decoder_and_head

IGNORE_INDEX = -100
# Rows of logits per chunk. Small chunks keep the chunk (rows × vocabulary, fp32: 25 MB at 128 rows
# of a 49k vocabulary) in cache for the five passes over it: measured on this project's bench CPU,
# 1,100 label rows took 0.50 s at 128 rows against 0.96 s at 1,024. When the head itself is trained
# (full fine-tuning) every chunk adds into a vocabulary × hidden gradient, so chunks are larger there.
LOGITS_CHUNK_ROWS = 128
LOGITS_CHUNK_ROWS_TRAINED_HEAD = 1024


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``rows @ weight.T`` against ``targets``, without keeping logits.

    Returns (loss_sum, correct) where ``correct`` counts rows whose label has the largest logit
    (not differentiable).
    """

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        need_rows, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_rows = torch.empty_like(rows) if need_rows else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        loss = torch.zeros((), dtype=torch.float32, device=rows.device)
        correct = torch.zeros((), dtype=torch.long, device=rows.device)
        size = LOGITS_CHUNK_ROWS_TRAINED_HEAD if need_weight else LOGITS_CHUNK_ROWS
        for start in range(0, rows.shape[0], size):
            chunk = rows[start : start + size]
            wanted = targets[start : start + size]
            logits = (chunk @ weight.t()).float()
            picked = logits.gather(1, wanted[:, None]).squeeze(1)
            top = logits.amax(-1)
            correct += (picked >= top).sum()
            probs = logits.sub_(top[:, None]).exp_()  # in place: exp(logit − max), never overflows
            total = probs.sum(-1)
            loss += (top + total.log() - picked).sum()  # log-sum-exp − the label's logit
            if need_rows or need_weight:
                probs.div_(total[:, None])  # softmax
                probs[torch.arange(len(wanted), device=probs.device), wanted] -= 1.0
                probs = probs.to(weight.dtype)
                if need_rows:
                    grad_rows[start : start + size] = probs @ weight
                if need_weight:
                    grad_weight += (probs.t() @ chunk).float()
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_rows if need_rows else None, grad_weight if need_weight else None)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, grad_correct: torch.Tensor | None) -> tuple[Any, ...]:
        grad_rows, grad_weight = ctx.saved_tensors
        scale = grad_loss.to(torch.float32)
        rows = grad_rows * scale.to(grad_rows.dtype) if grad_rows is not None else None
        weight = (grad_weight * scale).to(ctx.weight_dtype) if grad_weight is not None else None
        return rows, weight, None


@dataclass
class LossSums:
    """Sums over a batch, so several batches can be combined exactly (token-level averaging)."""

    loss_sum: torch.Tensor  # differentiable sum of token losses (of pair losses for a pairwise objective)
    tokens: int  # labelled tokens (pairs for a pairwise objective): the units the loss is averaged over
    correct: int  # tokens whose argmax prediction equals the label (pairs ranked right)
    # Extra figures to log, each a *sum* over the batch's units: the loop divides by the step's units and
    # writes them into train.step (and eval.result as validation_<name>) events.
    metrics: dict[str, float] = field(default_factory=dict)


def labelled_hidden_rows(model: Any, batch: dict[str, torch.Tensor], through_wrapper: bool = False,
                         ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(head, hidden states at the labelled positions, their target ids, the (rows, positions-1) label mask).

    The decoder body runs once (through the wrapper's ``forward`` when ``through_wrapper``); the
    head is returned unapplied, so callers project only the labelled rows, in chunks if they like.
    """
    decoder, head = decoder_and_head(model)
    # Padded batches carry attention_mask; packed ones position_ids and cu_seq_lens (see model.attention).
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    if through_wrapper:
        hidden = _decoder_output_through_wrapper(model, decoder, inputs)
    else:
        hidden = decoder(**inputs).last_hidden_state
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    return head, hidden[:, :-1][mask], targets[mask], mask


def label_loss_sums(model: Any, batch: dict[str, torch.Tensor], through_wrapper: bool = False) -> LossSums:
    """Summed cross-entropy and correct-prediction count over the labelled positions of ``batch``.

    The decoder body runs directly (no logits for unlabelled positions) unless ``through_wrapper``:
    then the (PEFT-)wrapped model's own ``forward`` runs, so that state a wrapper injects there
    (virtual tokens of prompt tuning, past key values of prefix tuning) is part of the loss; the
    decoder's output is captured on the way and the head still runs only on labelled positions.
    """
    head, rows, wanted, _ = labelled_hidden_rows(model, batch, through_wrapper)
    if getattr(head, "bias", None) is not None or not isinstance(head, torch.nn.Linear) or torch.is_autocast_enabled(rows.device.type):
        logits = head(rows).float()
        loss_sum = F.cross_entropy(logits, wanted, reduction="sum")
        correct = int((logits.detach().argmax(-1) == wanted).sum())
    else:
        loss_sum, hits = LinearCrossEntropy.apply(rows, head.weight, wanted)
        correct = int(hits)
    return LossSums(loss_sum, int(wanted.numel()), correct)


def label_logits(model: Any, batch: dict[str, torch.Tensor], through_wrapper: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 logits of the labelled positions, rows × vocabulary; their labels) of ``batch``: what a user loss needs.

    The decoder runs once (through the wrapper's ``forward`` when ``through_wrapper``) and the head only
    on the positions that carry a label, so prompt tokens cost no vocabulary projection.
    """
    decoder, head = decoder_and_head(model)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    hidden = _decoder_output_through_wrapper(model, decoder, inputs) if through_wrapper else decoder(**inputs).last_hidden_state
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    return head(hidden[:, :-1][mask]).float(), targets[mask]


def _decoder_output_through_wrapper(model: Any, decoder: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's last hidden state for ``inputs`` when ``model(**inputs)`` runs (wrapper included).

    Virtual tokens a wrapper prepends are cut off, so positions line up with ``inputs``' labels.
    ``logits_to_keep=1`` keeps the wrapped forward from projecting every position to the vocabulary.
    """
    captured: list[torch.Tensor] = []

    def keep(_module: Any, _args: Any, output: Any) -> None:
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    handle = decoder.register_forward_hook(keep)
    try:
        model(**inputs, logits_to_keep=1, use_cache=False)
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the wrapped model's forward never ran its decoder")
    hidden = captured[-1]
    length = inputs["input_ids"].shape[1]
    return hidden[:, -length:] if hidden.shape[1] > length else hidden


def wrapper_injects_state(model: Any) -> bool:
    """Whether ``model`` is a PEFT wrapper whose ``forward`` adds state the bare decoder would miss
    (prompt learning: prompt, prefix and p-tuning). Training asks the method spec instead
    (``forward_through_wrapper``); this serves code that only holds a model (evaluation)."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


@torch.no_grad()
def mean_label_loss(model: Any, batches: Iterable[dict[str, torch.Tensor]],
                    loss_sums: Callable[[Any, dict[str, torch.Tensor]], LossSums] | None = None) -> dict[str, float]:
    """Token-level mean loss, next-token accuracy and perplexity over ``batches`` (model put in eval mode).

    ``loss_sums(model, batch)`` computes one batch (default ``label_loss_sums``, through the
    wrapper's forward where the wrapper injects state; the training loop passes its objective so
    validation measures what training optimizes).
    """
    loss_sums = loss_sums or (lambda model_, batch: label_loss_sums(model_, batch, wrapper_injects_state(model_)))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, tokens, correct = 0.0, 0, 0
    extra: dict[str, float] = {}
    for batch in batches:
        sums = loss_sums(model, {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()})
        loss_sum += float(sums.loss_sum)
        tokens += sums.tokens
        correct += sums.correct
        add_metric_sums(extra, sums.metrics)
    model.train(was_training)
    loss = loss_sum / max(tokens, 1)
    means = {name: value / max(tokens, 1) for name, value in extra.items()}
    return {**means, "loss": loss, "accuracy": correct / max(tokens, 1), "perplexity": perplexity(loss)}


def add_metric_sums(total: dict[str, float], sums: dict[str, Any]) -> None:
    """Add an objective's metric sums into ``total`` (tensors become floats)."""
    for name, value in sums.items():
        total[name] = total.get(name, 0.0) + float(value)


def perplexity(loss: float) -> float:
    """exp(loss), or inf where that overflows."""
    return math.exp(loss) if loss < 50 else float("inf")
