"""Dataset statistics kept in constant memory while rows stream by, and the estimates built from them.

- ``Distribution``: exact min/mean/p50/p95/max/histogram of integer lengths (memory grows with the
  number of *distinct* lengths, not of rows).
- ``LabelCounter``: labels (an explicit ``label`` field, else short repeated answers), per split.
- ``SystemPrompts``: which system prompts are used, by how many examples, first seen where.
- ``steps_per_epoch``, ``estimate_training``: steps, time and cost from counts and a measured speed.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from tuneforge.data.dedup import key64, normalize_text
from tuneforge.data.examples import TrainingExample

MAX_TRACKED_LABELS = 1000  # more distinct answers than this: not a label task, stop counting
MAX_LABELS = 50  # the most distinct answers a label task may have (as evaluate.metrics decides)
MAX_LABEL_WORDS = 4
MAX_TRACKED_SYSTEM_PROMPTS = 1000
IMBALANCE_RATIO = 5.0  # warn when the commonest label has this many times the examples of the rarest


class Distribution:
    """Exact summary statistics of non-negative integers, in memory bounded by distinct values."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0
        self.n = 0

    def add(self, value: int) -> None:
        self.counts[value] += 1
        self.total += value
        self.n += 1

    def merge(self, other: Distribution) -> None:
        self.counts.update(other.counts)
        self.total += other.total
        self.n += other.n

    def percentile(self, q: float) -> int:
        """The smallest value with at least ``q`` percent of the values at or below it."""
        rank, seen = math.ceil(self.n * q / 100), 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= max(rank, 1):
                return value
        return 0

    def summary(self) -> dict[str, Any]:
        if not self.n:
            return {"count": 0, "min": None, "mean": None, "p50": None, "p95": None, "max": None, "sum": 0}
        return {"count": self.n, "min": min(self.counts), "mean": round(self.total / self.n, 1),
                "p50": self.percentile(50), "p95": self.percentile(95), "max": max(self.counts), "sum": self.total}

    def histogram(self, bins: int = 20) -> list[dict[str, int]]:
        """``bins`` equal-width bins ``[low, high)`` (the last one closed) with their counts."""
        if not self.n:
            return []
        low, high = min(self.counts), max(self.counts)
        width = max(1, math.ceil((high - low + 1) / bins))
        edges = list(range(low, high + 1, width))
        result = [{"low": edge, "high": edge + width, "count": 0} for edge in edges]
        for value, count in self.counts.items():
            result[min((value - low) // width, len(result) - 1)]["count"] += count
        return result


def explicit_label(row: Any, example: TrainingExample) -> str | None:
    """A ``label`` column, or ``metadata.label``, as text."""
    value = row.get("label") if isinstance(row, dict) else None
    if value is None:
        value = example.metadata.get("label")
    if value is None or isinstance(value, (dict, list)):
        return None
    return normalize_text(str(value)) or None


def answer_label(example: TrainingExample) -> str | None:
    """The final answer as a label candidate: lower-cased, outer punctuation stripped, when short."""
    if example.is_text:
        return None
    answer = normalize_text(example.output).lower().strip(" \t.,;:!?\"'`*()[]{}<>")
    return answer if answer and len(answer.split()) <= MAX_LABEL_WORDS and len(answer) <= 60 else None


@dataclass
class LabelCounter:
    """Counts labels per split; gives up on answers as labels once they are too many to be labels."""

    explicit: Counter[tuple[int, str]] = field(default_factory=Counter)
    answers: Counter[tuple[int, str]] | None = field(default_factory=Counter)
    examples: int = 0
    with_explicit: int = 0

    def add(self, row: Any, example: TrainingExample, split: int) -> None:
        self.examples += 1
        label = explicit_label(row, example)
        if label is not None and len(self.explicit) < MAX_TRACKED_LABELS * 4:
            self.explicit[(split, label)] += 1
            self.with_explicit += 1
        if self.answers is not None:
            answer = answer_label(example)
            if answer is None or len(self.answers) >= MAX_TRACKED_LABELS:
                self.answers = None  # free text: not a label task
            else:
                self.answers[(split, answer)] += 1

    def labels(self) -> tuple[str | None, Counter[tuple[int, str]]]:
        """``(source, counts by (split, label))``: source is 'label field', 'answers' or None (no labels)."""
        if self.examples and self.with_explicit >= 0.9 * self.examples:
            return "label field", self.explicit
        if self.answers is not None and self.examples >= 2:
            distinct = {label for _, label in self.answers}
            if len(distinct) <= MAX_LABELS and len(distinct) <= max(2, self.examples // 2):
                return "answers", self.answers
        return None, Counter()


@dataclass
class SystemPrompts:
    """Distinct system prompts: count and first location of each; examples without one."""

    variants: dict[int, list[Any]] = field(default_factory=dict)  # key -> [count, first where, preview]
    without: int = 0
    first_without: str | None = None
    overflow: bool = False

    def add(self, example: TrainingExample, where: str) -> None:
        if example.is_text:
            return
        system = next((m["content"] for m in example.messages if m["role"] == "system"), None)
        if system is None:
            self.without += 1
            self.first_without = self.first_without or where
            return
        key = key64(normalize_text(system))
        if key in self.variants:
            self.variants[key][0] += 1
        elif len(self.variants) < MAX_TRACKED_SYSTEM_PROMPTS:
            preview = normalize_text(system)
            self.variants[key] = [1, where, preview[:80] + ("…" if len(preview) > 80 else "")]
        else:
            self.overflow = True

    @property
    def with_system(self) -> int:
        return sum(count for count, _, _ in self.variants.values())


def steps_per_epoch(train_examples: int, batch_size: int, gradient_accumulation_steps: int = 1) -> int:
    """Optimizer steps in one pass over ``train_examples`` (the last partial batch counts)."""
    return math.ceil(train_examples / max(1, batch_size * gradient_accumulation_steps)) if train_examples else 0


def split_sizes(examples: int, groups: int, validation_split: float, test_split: float) -> dict[str, int]:
    """About how many examples each split gets when finetune splits groups of equal prompts."""
    def share(fraction: float) -> int:
        count = round(groups * fraction)
        return max(count, 1) if fraction > 0 and groups >= 3 else count

    per_group = examples / groups if groups else 0
    test, validation = round(share(test_split) * per_group), round(share(validation_split) * per_group)
    return {"train": max(0, examples - test - validation), "validation": validation, "test": test}


def estimate_training(tokens_per_epoch: int, epochs: float, tokens_per_second: float | None,
                      cost_per_hour: float | None) -> dict[str, Any]:
    """Training time (seconds) and cost from a measured speed; None where the speed is unknown."""
    if not tokens_per_second:
        return {"seconds": None, "cost": None}
    seconds = tokens_per_epoch * epochs / tokens_per_second
    cost = seconds / 3600 * cost_per_hour if cost_per_hour is not None else None
    return {"seconds": round(seconds, 1), "cost": round(cost, 4) if cost is not None else None}
