"""Put evaluations side by side: the base-vs-tuned table and model-vs-model comparisons."""

from __future__ import annotations

from typing import Any, Mapping

from tuneforge.evaluate.metrics import lower_is_better

# Metrics where lower is better (the registry's specs say so for the rest); every other score is higher-is-better.
LOWER_IS_BETTER = {"loss", "perplexity"}
ORDER = ["accuracy", "exact_match", "precision", "recall", "f1_score", "bleu", "rouge_l", "loss", "perplexity", "token_accuracy"]


def compare_models(evaluations: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """Rows of ``{"metric", <name>: value ..., "best"}`` for every metric any evaluation has.

    ``evaluations`` maps a model name to its performance scores.
    """
    names = list(evaluations)
    metrics = [m for m in ORDER if any(m in scores for scores in evaluations.values())]
    metrics += sorted({m for scores in evaluations.values() for m in scores} - set(metrics))
    rows = []
    for metric in metrics:
        values = {name: evaluations[name].get(metric) for name in names}
        present = {name: value for name, value in values.items() if value is not None}
        best = None
        if len(present) > 1:
            pick = min if metric in LOWER_IS_BETTER or lower_is_better(metric) else max
            best = pick(present, key=present.__getitem__)
        rows.append({"metric": metric, **values, "best": best})
    return rows
