"""Cross-validation folds: every example in exactly one fold's test set, stratified by label for label tasks."""

from __future__ import annotations

import random
import statistics
from typing import Any, Mapping, Sequence

from tuneforge.data.examples import TrainingExample
from tuneforge.evaluate.metrics import is_label_task, normalize_answer


def make_folds(examples: Sequence[TrainingExample], k: int, seed: int = 42) -> list[list[int]]:
    """``k`` disjoint lists of indices into ``examples`` covering all of them, sizes within one of each other.

    For a label task each label's examples are shuffled (seeded) and dealt round-robin, continuing
    from fold to fold across labels, so every fold holds each label in (nearly) its overall share.
    """
    if k < 2 or k > len(examples):
        raise ValueError(f"cross-validation needs 2 <= K <= the number of examples ({len(examples)}); got K={k}")
    rng = random.Random(seed)
    answers = [example.output for example in examples]
    groups: dict[str, list[int]] = {}
    if is_label_task(answers):
        for index, answer in enumerate(answers):
            groups.setdefault(normalize_answer(answer), []).append(index)
    else:
        groups[""] = list(range(len(examples)))
    folds: list[list[int]] = [[] for _ in range(k)]
    position = 0
    for label in sorted(groups):
        members = groups[label]
        rng.shuffle(members)
        for index in members:
            folds[position % k].append(index)
            position += 1
    return [sorted(fold) for fold in folds]


def summarize_folds(performances: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Per metric every fold has: ``{"mean", "std" (sample standard deviation), "folds": [...]}``."""
    keys = [key for key in performances[0] if all(key in p for p in performances)] if performances else []
    summary = {}
    for key in keys:
        values = [float(p[key]) for p in performances]
        summary[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "folds": values}
    return summary
