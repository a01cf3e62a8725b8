"""Batches for training and evaluation: seeded order, grouped by length, padded only to the batch's longest.

Grouping similar lengths together keeps padding (wasted compute on a CPU) low while the order of
batches stays random. The order is a pure function of (seed, epoch), so a run can be resumed at
the exact batch where it stopped.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch

from tuneforge.data.tokenize import IGNORE_INDEX, EncodedExample, EncodedPair

# How many batches are sorted by length together: larger means less padding, less randomness.
LENGTH_GROUP_BATCHES = 16


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch, in training order."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = batch_size * LENGTH_GROUP_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda index: lengths[index])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def sequential_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic batches for evaluation: sorted by length so little is padded."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def split_into_passes(items: Sequence[EncodedExample], max_tokens: int | None, packed: bool) -> list[list[EncodedExample]]:
    """Cut one batch into consecutive forward/backward passes of at most ``max_tokens`` tokens each.

    A pass costs its tokens as the model sees them: the sum of lengths when ``packed``, else the
    batch width times the rows. Because the loss is summed per token and divided by the batch's
    labelled tokens, the passes' gradients add up to the whole batch's gradient: only the peak
    activation memory changes. An example longer than ``max_tokens`` gets a pass of its own.
    ``None`` keeps the batch whole.
    """
    if max_tokens is None:
        return [list(items)]
    passes: list[list[EncodedExample]] = []
    current: list[EncodedExample] = []
    total = width = 0
    for item in items:
        length = len(item.input_ids) + (len(item.rejected_ids) if isinstance(item, EncodedPair) else 0)
        cost = total + length if packed else max(width, length) * (len(current) + 1)
        if current and cost > max_tokens:
            passes.append(current)
            current, total, width = [], 0, 0
        current.append(item)
        total, width = total + length, max(width, length)
    passes.append(current)
    return passes


def collate(items: Sequence[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors.

    Preference pairs (``EncodedPair``) give 2N rows: the N chosen sequences, then the N rejected ones
    in the same order (row i and row N + i are one pair), as TRL's DPO batches are laid out.
    """
    if items and isinstance(items[0], EncodedPair):
        sequences = [pair.sequences() for pair in items]  # type: ignore[attr-defined]
        items = [chosen for chosen, _ in sequences] + [rejected for _, rejected in sequences]
    width = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        input_ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_packed(items: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
    """All ``items`` back to back in one row: no padding at all.

    ``position_ids`` restart at 0 for each example and ``cu_seq_lens_q``/``cu_seq_lens_k`` mark the
    example boundaries, for attention that never crosses examples (``model.attention``). The first
    label of every example is masked: no example learns to predict its first token from the
    previous one.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    boundaries = [0]
    if items and isinstance(items[0], EncodedPair):
        raise ValueError("preference pairs are padded, not packed (pairwise objectives turn packing off)")
    for item in items:
        input_ids.extend(item.input_ids)
        labels.extend([IGNORE_INDEX] + list(item.labels[1:]))
        positions.extend(range(len(item.input_ids)))
        boundaries.append(len(input_ids))
    cuts = torch.tensor(boundaries, dtype=torch.int32)
    longest = max(len(item.input_ids) for item in items)
    return {
        "input_ids": torch.tensor([input_ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "cu_seq_lens_q": cuts,
        "cu_seq_lens_k": cuts,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens in ``batch`` that are not padding."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def iter_eval_batches(items: Sequence[EncodedExample], batch_size: int, pad_token_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """Collated evaluation batches of ``items`` in length order."""
    lengths = [len(item.input_ids) for item in items]
    for indices in sequential_batches(lengths, batch_size):
        yield collate([items[i] for i in indices], pad_token_id)
