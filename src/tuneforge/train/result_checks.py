"""Checks on a model's answers themselves: what ``TrainingMonitor.validate_results`` finds.

Given predictions (dicts with ``reference`` and ``prediction``, like ``ModelEvaluation.predictions``;
rows of ``predictions.jsonl`` work too, their ``tuned`` answer is read), each check names a way the
answers can be wrong that a single accuracy figure hides:

====================  ===================================================================================
kind                  found when
====================  ===================================================================================
empty_answers         answers that are empty or only whitespace
prompt_echo           answers that repeat the prompt (``input``) instead of answering it
label_collapse        one answer for most rows (>= 80 %, at least 5 rows) while the references vary
never_ends            answers that hit the token limit without ending (``finish_reason`` "length")
unmatched_references  labels of a label task that the model never answered (compared normalised)
====================  ===================================================================================

Each finding is a ``ResultFinding``: kind, severity ("warning" when it concerns 10 % of the rows or
more, else "info"), a message with the count, a suggestion, ``count`` and ``total`` rows, and up to
``MAX_EXAMPLES`` examples (row index, input, reference, prediction) to look at. Answers are compared
as ``evaluate.metrics.normalize_answer`` does for scoring. No torch: plain data in, plain data out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from tuneforge.evaluate.metrics import is_label_task, normalize_answer

MAX_EXAMPLES = 3
COLLAPSE_SHARE = 0.8  # one answer for this share of the rows is a collapse...
COLLAPSE_MIN_ROWS = 5  # ... when there are at least this many
WARNING_SHARE = 0.1  # a finding about this share of the rows or more is a warning


@dataclass
class ResultFinding:
    """One problem with the answers: what, how many rows, examples, and what to try."""

    kind: str
    severity: str
    message: str
    suggestion: str
    count: int
    total: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Row:
    index: int
    input: str
    reference: str
    prediction: str
    finish_reason: str | None

    def example(self) -> dict[str, Any]:
        return {"index": self.index, "input": self.input, "reference": self.reference, "prediction": self.prediction}


def check_predictions(predictions: Iterable[Mapping[str, Any]] | Any) -> list[ResultFinding]:
    """Findings about ``predictions`` (rows with ``reference`` and ``prediction``/``tuned``), in the order of the table above.

    Also takes an object with a ``predictions`` attribute (a ``ModelEvaluation``). Rows without an
    answer (``prediction``/``tuned`` missing or None) are skipped.
    """
    rows = _rows(getattr(predictions, "predictions", predictions))
    if not rows:
        return []
    checks = (_empty_answers, _prompt_echo, _label_collapse, _never_ends, _unmatched_references)
    return [finding for check in checks if (finding := check(rows))]


def _rows(predictions: Iterable[Mapping[str, Any]]) -> list[_Row]:
    rows = []
    for index, item in enumerate(predictions):
        answer = item.get("prediction", item.get("tuned"))
        if answer is None:
            continue
        rows.append(_Row(index, str(item.get("input") or ""), str(item.get("reference") or ""), str(answer),
                         item.get("finish_reason") or ("length" if item.get("truncated") else None)))
    return rows


def _finding(kind: str, matched: list[_Row], total: int, message: str, suggestion: str) -> ResultFinding | None:
    if not matched:
        return None
    severity = "warning" if len(matched) >= WARNING_SHARE * total else "info"
    return ResultFinding(kind, severity, message, suggestion, len(matched), total,
                         [row.example() for row in matched[:MAX_EXAMPLES]])


def _share(count: int, total: int) -> str:
    return f"{count} of {total} answers ({count / total:.0%})"


def _empty_answers(rows: list[_Row]) -> ResultFinding | None:
    empty = [row for row in rows if not row.prediction.strip()]
    return _finding("empty_answers", empty, len(rows), f"{_share(len(empty), len(rows))} are empty",
                    "the model ends its turn at once: check that the prompts end where an answer should start "
                    "(the chat template), and train longer or with a higher --learning-rate if the loss is still high")


def _prompt_echo(rows: list[_Row]) -> ResultFinding | None:
    def echoes(row: _Row) -> bool:
        prompt, answer = normalize_answer(row.input), normalize_answer(row.prediction)
        # Long enough not to catch a one-word prompt that happens to be its own answer.
        return len(prompt) >= 8 and answer.startswith(prompt) and normalize_answer(row.reference) != answer

    echoed = [row for row in rows if echoes(row)]
    return _finding("prompt_echo", echoed, len(rows), f"{_share(len(echoed), len(rows))} repeat the prompt instead of answering",
                    "the model continues the prompt: check that training puts the loss on the answers only "
                    "(no --train-on-prompt) and that evaluation renders prompts with the same template as training")


def _label_collapse(rows: list[_Row]) -> ResultFinding | None:
    if len(rows) < COLLAPSE_MIN_ROWS:
        return None
    answers = Counter(normalize_answer(row.prediction) for row in rows)
    answer, count = answers.most_common(1)[0]
    references = Counter(normalize_answer(row.reference) for row in rows)
    if count < COLLAPSE_SHARE * len(rows) or references.most_common(1)[0][1] >= COLLAPSE_SHARE * len(rows):
        return None  # no collapse, or the references themselves are mostly one value
    same = [row for row in rows if normalize_answer(row.prediction) == answer]
    return _finding("label_collapse", same, len(rows),
                    f"{_share(count, len(rows))} are the same, {answer!r}, while the references have "
                    f"{len(references)} different values",
                    "the model learned the most frequent answer, not the task: balance the labels, train longer "
                    "or with a higher --learning-rate, and check that the prompts hold what the answer depends on")


def _never_ends(rows: list[_Row]) -> ResultFinding | None:
    cut = [row for row in rows if row.finish_reason == "length"]
    return _finding("never_ends", cut, len(rows), f"{_share(len(cut), len(rows))} hit the token limit without ending",
                    "the model does not end its turn: check that training examples end with the end-of-turn "
                    "marker, or raise --max-new-tokens if the answers are long")


def _unmatched_references(rows: list[_Row]) -> ResultFinding | None:
    references = [row.reference for row in rows]
    if not is_label_task(references):
        return None  # free text is rarely matched word for word: that is what BLEU/ROUGE are for
    answered = {normalize_answer(row.prediction) for row in rows}
    by_label = Counter(normalize_answer(ref) for ref in references)
    missing = [label for label in by_label if label not in answered]
    if not missing:
        return None
    rows_missed = [row for row in rows if normalize_answer(row.reference) in missing]
    listed = ", ".join(f"{label!r} ({by_label[label]} rows)" for label in sorted(missing, key=lambda l: -by_label[l])[:5])
    return _finding("unmatched_references", rows_missed, len(rows),
                    f"{len(missing)} of the {len(by_label)} reference labels were never answered: {listed}",
                    "these classes were not learned: give them more training examples, or check that their "
                    "training answers are spelled the same way as the references")
