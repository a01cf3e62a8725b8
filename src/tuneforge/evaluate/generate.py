"""Greedy answers for evaluation: a thin call into the inference engine (tuneforge.inference)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from tuneforge.inference import GenerationRequest, InferenceEngine

# Rows per generation batch. Bigger batches amortise each decoding step's fixed costs; rows that
# finish leave the batch, so a long answer no longer holds the others (bench/eval_bench.py).
EVAL_BATCH_SIZE = 32


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = EVAL_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """The greedy continuation of each rendered prompt, up to the end of the turn, as stripped text.

    ``on_batch(n)`` is told of every ``n`` answers finished (one at a time, as rows finish).
    """
    engine = InferenceEngine(model, tokenizer, batch_size=batch_size)
    requests = [GenerationRequest(prompt=prompt, max_new_tokens=max_new_tokens) for prompt in prompts]
    results = engine.generate(requests, on_result=(lambda index, result: on_batch(1)) if on_batch else None)
    return [result.text.strip() for result in results]
