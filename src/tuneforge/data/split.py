"""A seeded train/validation/test split that never puts the same prompt in two splits."""

from __future__ import annotations

import random
import unicodedata

from tuneforge.data.examples import TrainingExample


def _group_key(example: TrainingExample) -> str:
    """Examples with the same (normalised) prompt form one group and stay in one split."""
    if example.is_text:
        text = example.text or ""
    else:
        text = "\n".join(f"{m['role']}:{m['content']}" for m in example.prompt_messages)
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def split_examples(
    examples: list[TrainingExample], validation_split: float, test_split: float, seed: int
) -> tuple[list[TrainingExample], list[TrainingExample], list[TrainingExample]]:
    """Split into (train, validation, test) by shares of the groups of equal prompts.

    The same ``seed`` and input give the same split. A non-zero share gets at least one group
    when there are at least three groups, so a small file still has something to evaluate on.
    """
    groups: dict[str, list[TrainingExample]] = {}
    for example in examples:
        groups.setdefault(_group_key(example), []).append(example)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)

    def share(fraction: float) -> int:
        count = round(len(keys) * fraction)
        return max(count, 1) if fraction > 0 and len(keys) >= 3 else count

    n_test, n_val = share(test_split), share(validation_split)
    test_keys, val_keys, train_keys = keys[:n_test], keys[n_test : n_test + n_val], keys[n_test + n_val :]

    def gather(selected: list[str]) -> list[TrainingExample]:
        return [example for key in selected for example in groups[key]]

    return gather(train_keys), gather(val_keys), gather(test_keys)
