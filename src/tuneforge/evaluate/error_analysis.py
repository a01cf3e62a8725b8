"""Where the tuned model goes wrong: a confusion matrix and per-label precision/recall/F1 for label tasks,
the examples it gets wrong, and those it fixed or broke relative to the base model (for report.html)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from tuneforge.evaluate.compare import example_correct
from tuneforge.evaluate.metrics import OTHER_LABEL, extract_label, normalize_answer

MAX_EXAMPLES = 50  # of each list (wrong, fixed, broke) kept in results.json


def confusion(predictions: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """``{"labels", "matrix", "per_label"}``: matrix[i][j] counts references ``labels[i]`` answered ``labels[j]``
    (a last column ``(other)`` when some answer names no label); per label precision, recall, F1 and support."""
    from sklearn.metrics import precision_recall_fscore_support

    gold = [normalize_answer(p["reference"]) for p in predictions]
    rows = sorted(set(gold) | {normalize_answer(label) for label in labels})
    answered = [extract_label(p["prediction"], rows) for p in predictions]
    columns = rows + ([OTHER_LABEL] if OTHER_LABEL in answered else [])
    matrix = [[sum(1 for g, a in zip(gold, answered) if g == row and a == column) for column in columns] for row in rows]
    precision, recall, f1, support = precision_recall_fscore_support(gold, answered, labels=rows, average=None, zero_division=0)
    per_label = {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for label, p, r, f, s in zip(rows, precision, recall, f1, support)}
    return {"labels": rows, "columns": columns, "matrix": matrix, "per_label": per_label}


def error_analysis(tuned: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]] | None, task: str,
                   labels: Sequence[str] | None = None, limit: int = MAX_EXAMPLES) -> dict[str, Any]:
    """The tuned model's mistakes on the test split, and what changed against the base model's answers.

    ``tuned`` and ``base`` are ``evaluate_model`` predictions on the same examples (``input``,
    ``reference``, ``prediction``); an answer is right as accuracy (label tasks) or exact match
    (free text) counts it. Lists are cut at ``limit`` examples; the counts are of all.
    """
    tuned_right = example_correct(tuned, task, labels)
    base_right = example_correct(base, task, labels) if base and len(base) == len(tuned) else None

    def row(index: int) -> dict[str, Any]:
        item = {"input": tuned[index]["input"], "reference": tuned[index]["reference"], "tuned": tuned[index]["prediction"]}
        if base_right is not None:
            item["base"] = base[index]["prediction"]  # type: ignore[index]
        return item

    wrong = [i for i, right in enumerate(tuned_right) if not right]
    found: dict[str, Any] = {"task": task, "examples": len(tuned), "wrong_count": len(wrong), "wrong": [row(i) for i in wrong[:limit]]}
    if base_right is not None:
        fixed = [i for i, (b, t) in enumerate(zip(base_right, tuned_right)) if t and not b]
        broke = [i for i, (b, t) in enumerate(zip(base_right, tuned_right)) if b and not t]
        found.update(fixed_count=len(fixed), broke_count=len(broke), fixed=[row(i) for i in fixed[:limit]],
                     broke=[row(i) for i in broke[:limit]])
    if task == "classification" and tuned:
        found["confusion"] = confusion(tuned, labels or ())
        if base_right is not None:
            found["base_confusion"] = confusion(base, labels or ())  # type: ignore[arg-type]
    return found
