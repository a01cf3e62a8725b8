"""Scores for generated answers: accuracy, precision/recall/F1 for label tasks, BLEU and ROUGE-L for text.

Every metric a config can name is a ``MetricSpec`` in the ``METRICS`` registry (the end of this
file); a user metric is a ``module:attribute`` plug-in (docs/SEAMS.md, "Evaluation metrics").

Label tasks (the references form a small set of labels) are scored after a lenient label
extraction: an answer counts as a label when, normalised, it is that label, or it names exactly one
of the labels as a whole phrase ("The intent is billing." → billing). Strict exact match is
reported beside it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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
    return {**_bleu(predictions, references), **_rouge(predictions, references)}


# ----- the metric registry ------------------------------------------------------------------------

ANSWERS = "answers"  # scored from the generated answers against the references
LIKELIHOOD = "likelihood"  # from the teacher-forced loss on the reference answers
LABEL_TASKS = ("classification",)
ALL_TASKS = ("classification", "generation")


@dataclass(frozen=True)
class MetricSpec:
    """One evaluation metric, registered in ``core.registries.METRICS`` under the name configs use.

    ``source`` says what it scores. An ``answers`` metric's ``compute(predictions, references,
    labels)`` gets the stripped greedy answers, the references and the task's label set (None when
    unknown) and applies to the ``tasks`` listed ("classification": the references are a small label
    set; "generation": free text). A ``likelihood`` metric's ``compute(scores)`` gets the loss pass's
    ``{"loss", "perplexity", "accuracy"}`` (mean answer-token loss, its exp, next-token accuracy).
    Either returns ``{key: float}``; ``keys`` names them (a metric may write a key unlike its name:
    ``f1`` writes ``f1_score``) and ``higher_is_better`` orders them in comparisons. ``sample``:
    (references, right answers, wrong answers) for the contract test when its own samples do not fit.
    """

    name: str
    compute: Callable[..., dict[str, float]]
    keys: tuple[str, ...]
    source: str = ANSWERS
    tasks: tuple[str, ...] = ALL_TASKS
    higher_is_better: bool = True
    description: str = ""
    # (references, right answers, wrong answers) the metric contract test scores instead of its own label
    # or free-text samples, for metrics those cannot exercise (JSON, numbers).
    sample: tuple[Sequence[str], Sequence[str], Sequence[str]] | None = None
    # True: ``compute`` also takes ``examples=`` (the scored ``TrainingExample`` objects, in order, or
    # None when there are none, as in the contract test): metrics that read an example's metadata.
    uses_examples: bool = False

    def score(self, predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None,
              examples: Sequence[Any] | None = None) -> dict[str, float]:
        """``compute`` of an answers metric, given the examples when it asks for them."""
        if self.uses_examples:
            return self.compute(predictions, references, labels, examples=examples)
        return self.compute(predictions, references, labels)


def _label_scores(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None) -> dict[str, float]:
    return classification_metrics(predictions, references, labels)


def _one(key: str, compute: Callable[[Sequence[str], Sequence[str], Sequence[str] | None], dict[str, float]]) -> Callable[..., dict[str, float]]:
    return lambda predictions, references, labels=None: {key: float(compute(predictions, references, labels)[key])}


def _bleu(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, float]:
    from sacrebleu.metrics import BLEU

    # effective_order: short answers (under 4 words) are scored on the n-grams they can have.
    return {"bleu": float(BLEU(effective_order=True).corpus_score(list(predictions), [list(references)]).score)}


def _rouge(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return {"rouge_l": float(sum(rouge) / max(len(rouge), 1))}


# performance key -> higher is better, for every metric registered so far (built-ins and plug-ins).
_HIGHER_IS_BETTER: dict[str, bool] = {}


def _check_metric(name: str, entry: Any) -> MetricSpec:
    """A registered metric as a ``MetricSpec``: a spec is kept; a plain function ``(predictions,
    references) -> float | dict`` (or ``(predictions, references, examples)``: the scored
    ``TrainingExample`` objects too) becomes an answers metric for every task, higher is better."""
    spec = entry if isinstance(entry, MetricSpec) else _function_metric(name, entry)
    for key in spec.keys:
        _HIGHER_IS_BETTER[key] = spec.higher_is_better
    return spec


def _function_metric(name: str, entry: Any) -> MetricSpec:
    if not callable(entry):
        raise TypeError(f"expected a MetricSpec or a function (predictions, references) -> float, got {type(entry).__name__}")
    key = getattr(entry, "__name__", name.rpartition(":")[2]) or name
    with_examples = _takes_three(entry)

    def compute(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None,
                examples: Sequence[Any] | None = None) -> dict[str, float]:
        args = (list(predictions), list(references)) + ((list(examples or ()),) if with_examples else ())
        value = entry(*args)
        return {k: float(v) for k, v in value.items()} if isinstance(value, dict) else {key: float(value)}

    return MetricSpec(name=name, compute=compute, keys=(key,), description=(entry.__doc__ or "").strip().split("\n")[0],
                      uses_examples=True)


def _takes_three(function: Callable[..., Any]) -> bool:
    """Whether a plain-function metric takes (predictions, references, examples) rather than two arguments."""
    import inspect

    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def _register_builtins() -> None:
    from tuneforge.core.registries import METRICS

    METRICS.set_check(_check_metric)
    builtins = [
        MetricSpec("accuracy", _one("accuracy", _label_scores), ("accuracy",), tasks=LABEL_TASKS,
                   description="share of answers naming the reference label"),
        MetricSpec("precision", _one("precision", _label_scores), ("precision",), tasks=LABEL_TASKS,
                   description="macro precision over the references' labels"),
        MetricSpec("recall", _one("recall", _label_scores), ("recall",), tasks=LABEL_TASKS,
                   description="macro recall over the references' labels"),
        MetricSpec("f1", _one("f1_score", _label_scores), ("f1_score",), tasks=LABEL_TASKS,
                   description="macro F1 over the references' labels"),
        MetricSpec("exact_match", lambda predictions, references, labels=None: {"exact_match": exact_match(predictions, references)},
                   ("exact_match",), description="share of answers equal to the reference after normalisation"),
        MetricSpec("bleu", _bleu, ("bleu",), tasks=("generation",), description="corpus BLEU (sacrebleu, 0-100)"),
        MetricSpec("rouge", _rouge, ("rouge_l",), tasks=("generation",), description="mean ROUGE-L F-measure (0-1)"),
        MetricSpec("loss", lambda scores: {"loss": float(scores["loss"])}, ("loss",), source=LIKELIHOOD,
                   higher_is_better=False, description="mean cross-entropy of the reference answers' tokens"),
        MetricSpec("perplexity", lambda scores: {"perplexity": float(math.exp(min(scores["loss"], 50.0)))}, ("perplexity",),
                   source=LIKELIHOOD, higher_is_better=False, description="exp of the answer-token loss"),
    ]
    for spec in builtins:
        METRICS.register(spec.name, spec)


def metric_specs(names: Sequence[str]) -> list[MetricSpec]:
    """The registered specs of ``names`` (plug-ins imported), in order; unknown names raise ``UnknownNameError``."""
    from tuneforge.core.registries import METRICS

    return [METRICS.get(name) for name in dict.fromkeys(names)]


def lower_is_better(key: str) -> bool:
    """Whether a lower value of performance key ``key`` is better (loss, perplexity, plug-ins that say so)."""
    from tuneforge.core.registries import METRICS

    METRICS.names()  # the built-ins registered
    return not _HIGHER_IS_BETTER.get(key, True)


_register_builtins()
