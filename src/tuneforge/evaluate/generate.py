"""Greedy generation for evaluation and chat, batched with left padding."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tuneforge.model.load import end_of_turn_ids


@torch.no_grad()
def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """The greedy continuation of each rendered prompt, up to the end of the turn, as text."""
    from transformers import GenerationConfig

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stop_ids = end_of_turn_ids(tokenizer)
    settings = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    answers: list[str] = [""] * len(prompts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            encoded = tokenizer([prompts[i] for i in indices], add_special_tokens=False, padding=True, return_tensors="pt")
            encoded = {key: value.to(device) for key, value in encoded.items()}
            output = model.generate(**encoded, generation_config=settings)
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for index, tokens in zip(indices, new_tokens):
                answers[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            if on_batch:
                on_batch(len(indices))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers
