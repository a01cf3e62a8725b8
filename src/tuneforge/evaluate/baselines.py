"""Prompting baselines: was fine-tuning worth it?

The guides users learn from say: before fine-tuning, try few-shot prompting and retrieval, and
fine-tune only when that beats them. So every evaluation scores, beside base and tuned and on the
same test split with the same scoring (``evaluate_model``):

- ``few_shot``: the base model with ``k`` training examples (drawn once, seeded) as prior chat turns;
- ``retrieval_few_shot``: the base model with the ``k`` training examples most similar to each test
  input by BM25 (``bm25s``) as prior chat turns.

Shots come only from the examples given as the training pool (the train split): never from the test
split. Each baseline reports its quality metrics and ``prompt_tokens_per_request`` /
``seconds_per_request`` (from ``evaluate_model``), and ``verdict`` says whether the tuned model beats
the best of them (the base model's zero-shot answers count as a prompting baseline too) and by how
much, and at what prompt-token cost.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from tuneforge.core.errors import ConfigError
from tuneforge.data.examples import TrainingExample
from tuneforge.evaluate.metrics import ANSWERS, lower_is_better, metric_specs
from tuneforge.evaluate.run import ModelEvaluation, evaluate_model

DEFAULT_SHOTS = 5
RETRIEVERS = ("bm25",)
FEW_SHOT = "few_shot"
RETRIEVAL_FEW_SHOT = "retrieval_few_shot"
ZERO_SHOT = "base"
LABELS = {ZERO_SHOT: "base zero-shot", FEW_SHOT: "few-shot", RETRIEVAL_FEW_SHOT: "retrieval few-shot"}
# The metric a verdict is given on, the first one the evaluations have.
VERDICT_METRICS = ("accuracy", "f1_score", "rouge_l", "bleu", "exact_match")
# Differences smaller than this on the verdict metric are a tie (the same number of hits, rounding).
TIE = 1e-9


def _pairs(example: TrainingExample) -> list[dict[str, Any]]:
    """The example as shot turns: its conversation without any system turn (the test example keeps its own)."""
    return [{"role": m["role"], "content": m["content"]} for m in example.messages if m["role"] != "system"]


def with_shots(example: TrainingExample, shots: Sequence[TrainingExample]) -> TrainingExample:
    """``example`` with ``shots`` put before it as earlier user/assistant turns (after its system turn, if any)."""
    system = [m for m in example.messages if m["role"] == "system"][:1]
    rest = [m for m in example.messages if m not in system]
    turns = [turn for shot in shots for turn in _pairs(shot)]
    return TrainingExample(messages=system + turns + rest, metadata=example.metadata, source=example.source)


def shot_pool(train: Sequence[TrainingExample]) -> list[TrainingExample]:
    """The training examples usable as shots: chat examples with an answer."""
    return [example for example in train if not example.is_text and example.output]


def seeded_shots(pool: Sequence[TrainingExample], k: int, seed: int) -> list[TrainingExample]:
    """``k`` examples of ``pool`` drawn with ``seed`` (the same for every test example), or all when fewer."""
    return random.Random(seed).sample(list(pool), min(k, len(pool)))


class BM25Retriever:
    """The training examples most similar to a query by BM25 over their user turns (``bm25s``)."""

    def __init__(self, pool: Sequence[TrainingExample]) -> None:
        import bm25s

        self.pool = list(pool)
        self._bm25s = bm25s
        self.index = bm25s.BM25()
        # stopwords=None: short label-task inputs would lose most of their words to an English list.
        self.index.index(bm25s.tokenize([example.input for example in self.pool], stopwords=None, show_progress=False),
                         show_progress=False)

    def top(self, query: str, k: int) -> list[TrainingExample]:
        """Up to ``k`` most similar examples, best first; only examples sharing a word with ``query`` count."""
        k = min(k, len(self.pool))
        if k == 0:
            return []
        tokens = self._bm25s.tokenize([query], stopwords=None, show_progress=False)
        if not tokens.vocab:  # no word to match: nothing is similar
            return []
        indices, scores = self.index.retrieve(tokens, k=k, show_progress=False)
        return [self.pool[int(index)] for index, score in zip(indices[0], scores[0]) if score > 0]


def retriever_for(name: str, pool: Sequence[TrainingExample]) -> BM25Retriever:
    if name != "bm25":
        raise ConfigError([f"baseline_retriever: unknown retriever {name!r}; choose from: {', '.join(RETRIEVERS)}"])
    return BM25Retriever(pool)


@dataclass
class Baseline:
    """One prompting baseline's evaluation and how its prompts were built."""

    name: str
    evaluation: ModelEvaluation
    shots: int
    retriever: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": LABELS.get(self.name, self.name), "performance": self.evaluation.performance,
                "resources": self.evaluation.resources, "shots": self.shots, "retriever": self.retriever}


def answer_metrics(metrics: Sequence[str]) -> list[str]:
    """The answer metrics of ``metrics`` (the loss of a few-shot prompt would score the shots too)."""
    return [spec.name for spec in metric_specs(metrics) if spec.source == ANSWERS] or ["exact_match"]


def evaluate_baselines(
    model: Any,
    tokenizer: Any,
    train: Sequence[TrainingExample],
    test: Sequence[TrainingExample],
    shots: int = DEFAULT_SHOTS,
    retriever: str = "bm25",
    seed: int = 42,
    metrics: Sequence[str] = ("accuracy", "precision", "recall", "f1", "bleu", "rouge"),
    on_progress: Callable[[str, int], None] | None = None,
    **evaluation_args: Any,
) -> dict[str, Baseline]:
    """Score the few-shot and retrieval few-shot baselines of ``model`` (the base) on ``test``.

    ``train`` is the pool shots are drawn from: pass the train split only, never the test split.
    ``evaluation_args`` go to ``evaluate_model`` (max_length, batch_size, max_new_tokens, labels).
    Returns ``{}`` when there is no chat example to test or no training example to show.
    """
    chat = [example for example in test if not example.is_text]
    pool = shot_pool(train)
    if not chat or not pool or shots < 1:
        return {}
    evaluation_args = {**evaluation_args, "metrics": answer_metrics(metrics)}
    fixed = seeded_shots(pool, shots, seed)
    found = retriever_for(retriever, pool)
    prompts = {
        FEW_SHOT: [with_shots(example, fixed) for example in chat],
        RETRIEVAL_FEW_SHOT: [with_shots(example, list(reversed(_filled(found.top(example.input, shots), fixed, shots))))
                             for example in chat],
    }
    results = {}
    for name, examples in prompts.items():
        progress = (lambda n, name=name: on_progress(name, n)) if on_progress else None
        evaluation = evaluate_model(model, tokenizer, examples, on_progress=progress, **evaluation_args)
        for prediction, example in zip(evaluation.predictions, chat):
            prediction["input"] = example.input
        results[name] = Baseline(name, evaluation, len(fixed), retriever if name == RETRIEVAL_FEW_SHOT else None)
    return results


def _filled(found: list[TrainingExample], fixed: Sequence[TrainingExample], k: int) -> list[TrainingExample]:
    """``found`` (best first), filled up to ``k`` with the seeded shots when fewer examples share a word with the input."""
    extra = [example for example in fixed if all(example is not other for other in found)]
    return (found + extra)[:k]


# ----- the verdict --------------------------------------------------------------------------------


def verdict_metric(*performances: Mapping[str, float] | None) -> str | None:
    """The metric the verdict is given on: the first of ``VERDICT_METRICS`` every given evaluation has."""
    given = [p for p in performances if p]
    return next((m for m in VERDICT_METRICS if given and all(m in p for p in given)), None)


def verdict(tuned: Mapping[str, Any] | None, candidates: Mapping[str, Mapping[str, Any]],
            metric: str | None = None) -> dict[str, Any] | None:
    """Whether the tuned model beats the best prompting baseline, by how much, at what prompt cost.

    ``tuned`` and each of ``candidates`` (name -> evaluation) are ``{"performance": {...},
    "resources": {...}}``; the names of ``LABELS`` are shown by their labels. Returns None when there
    is nothing to compare. ``worth_it`` is true when the tuned model is better on ``metric`` (default:
    ``verdict_metric``); ``message`` says so in one sentence, or what to try instead.
    """
    if not tuned or not candidates:
        return None
    metric = metric or verdict_metric(tuned.get("performance"), *(c.get("performance") for c in candidates.values()))
    if metric is None:
        return None
    lower = lower_is_better(metric)
    scored = {name: c for name, c in candidates.items() if metric in (c.get("performance") or {})}
    if metric not in (tuned.get("performance") or {}) or not scored:
        return None
    pick = min if lower else max
    best = pick(scored, key=lambda name: scored[name]["performance"][metric])
    tuned_value = float(tuned["performance"][metric])
    best_value = float(scored[best]["performance"][metric])
    gain = (best_value - tuned_value) if lower else (tuned_value - best_value)
    tuned_tokens = (tuned.get("resources") or {}).get("prompt_tokens_per_request")
    best_tokens = (scored[best].get("resources") or {}).get("prompt_tokens_per_request")
    ratio = best_tokens / tuned_tokens if tuned_tokens and best_tokens else None
    label = LABELS.get(best, best)
    result = {"metric": metric, "tuned": tuned_value, "best_baseline": best, "best_baseline_label": label,
              "best_baseline_value": best_value, "difference": round(gain, 6), "prompt_token_ratio": ratio,
              "worth_it": gain > TIE}
    result["message"] = _message(result)
    return result


def _tokens(ratio: float | None) -> str:
    if ratio is None:
        return ""
    if ratio >= 1:
        return f"{ratio:.1f}× fewer prompt tokens per request"
    return f"{1 / ratio:.1f}× more prompt tokens per request"


def _message(v: dict[str, Any]) -> str:
    best = f"{v['best_baseline_label']}, {v['best_baseline_value']:.2f}"
    tokens = _tokens(v["prompt_token_ratio"])
    if v["worth_it"]:
        return (f"tuned beats the best prompting baseline ({best}) by {v['difference']:+.2f} {v['metric']}"
                + (f" and needs {tokens}" if tokens else ""))
    if abs(v["difference"]) <= TIE:
        return (f"tuned only ties the best prompting baseline ({best}) on {v['metric']}"
                + (f", with {tokens}" if tokens else "")
                + "; try more training data, more epochs or a higher learning rate, or keep the prompt if its cost is acceptable")
    return (f"tuned does not beat the best prompting baseline ({best}): {v['difference']:+.2f} {v['metric']}; "
            f"use {v['best_baseline_label']} prompting instead, or try more (or cleaner) training data, more epochs, "
            "a higher learning rate or a larger LoRA rank")


def candidates_of(base: ModelEvaluation | Mapping[str, Any] | None,
                  baselines: Mapping[str, Baseline | Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{name: {"performance", "resources"}}`` of the base (zero-shot) and every baseline, for ``verdict``."""
    found: dict[str, dict[str, Any]] = {}
    if base is not None:
        found[ZERO_SHOT] = _as_scores(base)
    for name, baseline in baselines.items():
        found[name] = _as_scores(baseline.evaluation if isinstance(baseline, Baseline) else baseline)
    return found


def _as_scores(evaluation: ModelEvaluation | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(evaluation, ModelEvaluation):
        return {"performance": evaluation.performance, "resources": evaluation.resources}
    return {"performance": evaluation.get("performance") or {}, "resources": evaluation.get("resources") or {}}
