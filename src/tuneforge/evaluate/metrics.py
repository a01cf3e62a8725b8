"""Scores for generated answers: accuracy, precision/recall/F1 for label tasks, BLEU and ROUGE-L for text.

Label tasks (the references form a small set of labels) are scored after a lenient label
extraction: an answer counts as a label when, normalised, it is that label, or it names exactly one
of the labels as a whole phrase ("The intent is billing." → billing). Strict exact match is
reported beside it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

OTHER_LABEL = "(other)"
MAX_LABELS = 50


def normalize_answer(text: str) -> str:
    """First non-empty line, NFC, lower case, outer punctuation and quotes removed, spaces collapsed."""
    lines = [line for line in unicodedata.normalize("NFC", text).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    first = " ".join(first.lower().split())
    return first.strip(" \t.,;:!?\"'`*()[]{}<>")


def is_label_task(references: Sequence[str]) -> bool:
    """Whether references look like class labels: few distinct short values, most of them repeated."""
    if len(references) < 2:
        return False
    distinct = {normalize_answer(ref) for ref in references}
    short = all(len(label.split()) <= 4 for label in distinct)
    return short and len(distinct) <= MAX_LABELS and len(distinct) <= max(2, len(references) // 2)


def extract_label(prediction: str, labels: Sequence[str]) -> str:
    """The label ``prediction`` names, or ``OTHER_LABEL``."""
    answer = normalize_answer(prediction)
    if answer in labels:
        return answer
    text = " ".join(unicodedata.normalize("NFC", prediction).lower().split())
    named = [label for label in labels if re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", text)]
    return named[0] if len(named) == 1 else OTHER_LABEL


def classification_metrics(predictions: Sequence[str], references: Sequence[str], label_set: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over the labels present in the references (scikit-learn).

    ``label_set`` (all labels of the task) is what answers are matched against; default: the references'.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    gold = [normalize_answer(ref) for ref in references]
    labels = sorted(set(gold))
    candidates = sorted({normalize_answer(label) for label in label_set} | set(labels)) if label_set else labels
    predicted = [extract_label(pred, candidates) for pred in predictions]
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, labels=labels, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1_score": float(f1),
        "exact_match": exact_match(predictions, references),
    }


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of answers equal to the reference after normalisation."""
    if not references:
        return 0.0
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return hits / len(references)


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, 0-100) and mean ROUGE-L F-measure (rouge-score, 0-1)."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    # effective_order: short answers (under 4 words) are scored on the n-grams they can have.
    bleu = BLEU(effective_order=True).corpus_score(list(predictions), [list(references)]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return {"bleu": float(bleu), "rouge_l": float(sum(rouge) / max(len(rouge), 1))}
