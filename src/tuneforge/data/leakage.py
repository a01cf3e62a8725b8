"""Leakage between the training set and a validation or test set: the same, or nearly the same, prompt in both.

A model scored on prompts it was trained on looks better than it is. ``find_leakage(train, other,
"validation")`` compares every prompt of ``other`` with the training prompts: exact copies after
Unicode NFC and whitespace collapsing (``dedup.prompt_text``), and near copies by MinHash
(``dedup.BatchNearDuplicates``, vectorised, 5-gram shingles). Each leak is one ``split_leakage`` warning at the
row of ``other``, with ``other_where`` naming the training row (``file:line`` on both sides).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tuneforge.data.dedup import BatchNearDuplicates, key64, prompt_text
from tuneforge.data.examples import TrainingExample
from tuneforge.data.findings import Finding, finding

# prepare's grouping rule (PrepareOptions.group_similarity): prompts this similar always share a split, so a
# directory that ``tuneforge prepare`` wrote never warns.
NEAR_THRESHOLD = 0.9
MAX_NEAR_ROWS = 200_000  # training prompts sketched for the near check at most (512 bytes each: 100 MB)
NUM_PERM = 128  # MinHash permutations: the similarity estimate's noise is about 0.03 near 0.9
MAX_BUCKET_TRAIN = 32  # training prompts compared per LSH bucket (templated data fills buckets)


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
    exact: dict[int, int] = {}
    for position, example in enumerate(train):
        exact.setdefault(key64(prompt_text(example)), position)
    leaks: dict[int, Finding] = {}
    pending: list[int] = []  # positions in ``other`` with no exact twin: candidates for the near check
    for position, example in enumerate(other):
        twin = exact.get(key64(prompt_text(example)))
        if twin is None:
            pending.append(position)
        else:
            leaks[position] = _leak(example, train[twin], split_name, None)
    if near_threshold is not None and pending:
        limit = len(train) if max_near_rows is None else min(len(train), max_near_rows)
        for position, (twin, similarity) in _near_twins(train[:limit], [other[i] for i in pending], near_threshold).items():
            leaks[pending[position]] = _leak(other[pending[position]], train[twin], split_name, similarity)
    return [leaks[position] for position in sorted(leaks)]


def _near_twins(train: Sequence[TrainingExample], other: Sequence[TrainingExample],
                threshold: float) -> dict[int, tuple[int, float]]:
    """``{position in other: (position in train, similarity)}``: each other prompt's most similar training prompt.

    MinHash signatures are computed in vectorised batches (``BatchNearDuplicates``); LSH bands give the
    candidate pairs (other, train) that share a bucket, verified on the full signature.
    """
    sketches = BatchNearDuplicates(threshold, num_perm=NUM_PERM)
    for position, example in enumerate(train):
        sketches.add(position, prompt_text(example))
    for position, example in enumerate(other):
        sketches.add(len(train) + position, prompt_text(example))
    ids, signatures = sketches.signatures()
    is_other = ids >= len(train)
    if not is_other.any() or is_other.all():
        return {}
    best: dict[int, tuple[int, float]] = {}
    for band in range(sketches.bands):
        keys = sketches.band_keys(signatures, band)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], len(order)]
        shared = ends - starts >= 2  # only buckets of two or more can pair an other prompt with a training one
        for start, end in zip(starts[shared].tolist(), ends[shared].tolist()):
            members = order[start:end]
            mine, theirs = members[is_other[members]], members[~is_other[members]][:MAX_BUCKET_TRAIN]
            if not len(mine) or not len(theirs):
                continue
            a, b = np.repeat(mine, len(theirs)), np.tile(theirs, len(mine))
            similarity = (signatures[a] == signatures[b]).mean(axis=1)
            for x, y, value in zip(a.tolist(), b.tolist(), similarity.tolist()):
                if value >= threshold:
                    key, twin = int(ids[x]) - len(train), int(ids[y])
                    if key not in best or value > best[key][1] or (value == best[key][1] and twin < best[key][0]):
                        best[key] = (twin, value)
    return best


def leakage_warnings(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """The findings as ``TrainingData.metadata["warnings"]`` entries: code, message, where, other_where."""
    return [{"code": item.code, "message": item.message, "where": item.where, "other_where": item.other_where}
            for item in findings]


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
