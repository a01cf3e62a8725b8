"""Leakage between the training set and a validation or test set: the same, or nearly the same, prompt in both.

A model scored on prompts it was trained on looks better than it is. ``find_leakage(train, other,
"validation")`` compares every prompt of ``other`` with the training prompts: exact copies after
Unicode NFC and whitespace collapsing (``dedup.prompt_text``), and near copies by MinHash
(``dedup.NearDuplicateIndex``, character 5-grams). Each leak is one ``split_leakage`` warning at the
row of ``other``, with ``other_where`` naming the training row (``file:line`` on both sides).
"""

from __future__ import annotations

from typing import Any, Sequence

from tuneforge.data.dedup import NearDuplicateIndex, key64, prompt_text
from tuneforge.data.examples import TrainingExample
from tuneforge.data.findings import Finding, finding

# prepare's grouping rule (PrepareOptions.group_similarity): prompts this similar always share a split, so a
# directory that ``tuneforge prepare`` wrote never warns.
NEAR_THRESHOLD = 0.9
MAX_NEAR_ROWS = 100_000  # training prompts sketched for the near check at most (memory: ~1 KiB each)


def find_leakage(train: Sequence[TrainingExample], other: Sequence[TrainingExample], split_name: str,
                 near_threshold: float | None = NEAR_THRESHOLD, max_near_rows: int | None = MAX_NEAR_ROWS) -> list[Finding]:
    """One ``split_leakage`` warning per example of ``other`` whose prompt is (nearly) a training prompt.

    Args:
        train: the training examples (their ``source`` is ``file:line``).
        other: the validation or test examples to check.
        split_name: ``"validation"`` or ``"test"``, for the message.
        near_threshold: MinHash Jaccard similarity from which two prompts count as the same; None
            checks exact copies only.
        max_near_rows: sketch at most this many training prompts for the near check (None: all).

    Returns:
        Findings in the order of ``other``: ``where`` is the row of ``other``, ``other_where`` the
        training row it leaks from. Never raises for the examples' content.
    """
    if not train or not other:
        return []
    exact: dict[int, TrainingExample] = {}
    for example in train:
        exact.setdefault(key64(prompt_text(example)), example)
    index = _near_index(train, near_threshold, max_near_rows)
    leaks: list[Finding] = []
    for example in other:
        text = prompt_text(example)
        twin = exact.get(key64(text))
        if twin is not None:
            leaks.append(_leak(example, twin, split_name, None))
            continue
        if index is not None:
            _, matches = index.match(text)
            if matches:
                position, similarity = matches[0]
                leaks.append(_leak(example, train[int(position)], split_name, similarity))
    return leaks


def leakage_warnings(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """The findings as ``TrainingData.metadata["warnings"]`` entries: code, message, where, other_where."""
    return [{"code": item.code, "message": item.message, "where": item.where, "other_where": item.other_where}
            for item in findings]


def _near_index(train: Sequence[TrainingExample], threshold: float | None, limit: int | None) -> NearDuplicateIndex | None:
    if threshold is None:
        return None
    index = NearDuplicateIndex(threshold)
    for position, example in enumerate(train[:limit] if limit is not None else train):
        index.add(position, prompt_text(example))
    return index


def _leak(example: TrainingExample, twin: TrainingExample, split_name: str, similarity: float | None) -> Finding:
    file, line, row = locate(example.source)
    other_where = twin.source or "the training data"
    if similarity is None:
        message = (f"this {split_name} prompt is also in the training data ({other_where}); the score on it "
                   f"measures memory, not skill: remove it from one of the files")
    else:
        message = (f"this {split_name} prompt is nearly the same (similarity {similarity:.2f}) as a training prompt "
                   f"({other_where}); remove or rewrite one of them")
    return finding("split_leakage", message, file, line, row, other_where=other_where)


def locate(source: str) -> tuple[str, int | None, int | None]:
    """``(file, line, row)`` of an example's ``source`` (``file:line``, ``file:row N`` or ``file``)."""
    head, _, tail = source.rpartition(":")
    if head and tail.isdigit():
        return head, int(tail), None
    if head and tail.startswith("row ") and tail[4:].isdigit():
        return head, None, int(tail[4:])
    return source, None, None
