"""Preference accuracy on held-out pairs: how often a model gives the chosen answer a higher likelihood than
the rejected one.

Scored for the base and the tuned model alike (``evaluate_model`` adds it when the examples are
preference pairs), so ``results.json`` shows what DPO/ORPO changed: ``preference_accuracy`` (pairs with
log π(chosen) > log π(rejected), summed over the answer tokens as DPO compares them) and
``preference_margin`` (the mean of that difference, in nats).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tuneforge.data.batching import iter_eval_batches
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import encode_examples
from tuneforge.model.log_probs import sequence_log_probs
from tuneforge.model.loss import wrapper_injects_state


@torch.no_grad()
def preference_scores(model: Any, tokenizer: Any, examples: Sequence[TrainingExample], max_length: int = 512,
                      batch_size: int = 8) -> dict[str, float]:
    """``preference_accuracy`` and ``preference_margin`` of ``model`` over the preference pairs in ``examples``
    (empty when there are none)."""
    pairs = encode_examples(tokenizer, [example for example in examples if example.is_preference], max_length, pairs=True)
    if not pairs.items:
        return {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    through_wrapper = wrapper_injects_state(model)
    right, margin, count = 0, 0.0, 0
    for batch in iter_eval_batches(pairs.items, batch_size, tokenizer.pad_token_id):
        logps, _ = sequence_log_probs(model, {key: value.to(device) for key, value in batch.items()}, through_wrapper)
        chosen, rejected = logps.chunk(2)
        right += int((chosen > rejected).sum())
        margin += float((chosen - rejected).sum())
        count += int(chosen.numel())
    model.train(was_training)
    return {"preference_accuracy": right / count, "preference_margin": margin / count}
