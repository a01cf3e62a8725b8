"""Contract over every registered evaluation metric, and the metric registry's plug-ins and config validation."""

from __future__ import annotations

import math
import sys
import types

import pytest

from tuneforge.config import make_config
from tuneforge.core.errors import ConfigError, UnknownNameError
from tuneforge.core.registries import METRICS
from tuneforge.evaluate.compare import compare_models
from tuneforge.evaluate.metrics import ANSWERS, LIKELIHOOD, MetricSpec, metric_specs

LABEL_REFS = ["billing", "refund", "shipping", "billing", "refund", "shipping"]
LABEL_WRONG = ["refund", "shipping", "billing", "shipping", "billing", "refund"]
TEXT_REFS = ["the sky is blue on a clear day", "grass is green after the spring rain", "paris is the capital of france"]
TEXT_WRONG = ["completely unrelated words here", "nothing matches at all really", "a cat sat quietly"]


def better(spec: MetricSpec, good: float, bad: float) -> bool:
    return good > bad if spec.higher_is_better else good < bad


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_scores_perfect_best(name):
    spec = METRICS.get(name)
    assert isinstance(spec, MetricSpec) and spec.keys and spec.source in (ANSWERS, LIKELIHOOD)
    if spec.source == LIKELIHOOD:
        perfect = spec.compute({"loss": 0.0, "perplexity": 1.0, "accuracy": 1.0})
        wrong = spec.compute({"loss": 3.0, "perplexity": math.exp(3.0), "accuracy": 0.1})
    elif spec.sample is not None:  # metrics of answers the shared samples cannot exercise (JSON, numbers)
        references, right, wrong_answers = (list(part) for part in spec.sample)
        perfect, wrong = spec.compute(right, references, None), spec.compute(wrong_answers, references, None)
    elif "classification" in spec.tasks:
        perfect = spec.compute(LABEL_REFS, LABEL_REFS, sorted(set(LABEL_REFS)))
        wrong = spec.compute(LABEL_WRONG, LABEL_REFS, sorted(set(LABEL_REFS)))
    else:
        perfect, wrong = spec.compute(TEXT_REFS, TEXT_REFS, None), spec.compute(TEXT_WRONG, TEXT_REFS, None)
    assert set(perfect) == set(wrong) == set(spec.keys)
    for key in spec.keys:
        assert isinstance(perfect[key], float) and isinstance(wrong[key], float)
        assert math.isfinite(perfect[key]) and math.isfinite(wrong[key])
        assert better(spec, perfect[key], wrong[key]), (key, perfect[key], wrong[key])


def test_builtin_metric_names():
    assert {"accuracy", "precision", "recall", "f1", "exact_match", "bleu", "rouge", "loss", "perplexity"} <= set(METRICS.names())


@pytest.fixture
def plugin_module():
    module = types.ModuleType("tf_test_metrics")

    def first_word_match(predictions, references):
        """Share of answers whose first word is the reference's."""
        return sum(p.split()[:1] == r.split()[:1] for p, r in zip(predictions, references)) / len(references)

    module.first_word_match = first_word_match
    module.bits = MetricSpec("bits", lambda scores: {"bits_per_token": scores["loss"] / math.log(2)}, ("bits_per_token",),
                             source=LIKELIHOOD, higher_is_better=False)
    module.not_a_metric = 42
    sys.modules["tf_test_metrics"] = module
    yield module
    del sys.modules["tf_test_metrics"]
    for name in ("tf_test_metrics:first_word_match", "tf_test_metrics:bits"):
        METRICS.unregister(name)


def test_plugin_metrics(plugin_module, tiny_model, tiny_tokenizer):
    from tuneforge.data.examples import TrainingExample
    from tuneforge.evaluate.run import evaluate_model

    (function_spec,) = metric_specs(["tf_test_metrics:first_word_match"])
    assert function_spec.keys == ("first_word_match",) and function_spec.source == ANSWERS
    assert function_spec.compute(["a b", "c"], ["a x", "d"], None) == {"first_word_match": 0.5}
    config = make_config({"evaluation_metrics": ["accuracy", "tf_test_metrics:first_word_match", "tf_test_metrics:bits"]})
    examples = [TrainingExample.from_pair(f"describe thing {i}", f"a long and unique description number {i}") for i in range(3)]
    evaluation = evaluate_model(tiny_model, tiny_tokenizer, examples, max_new_tokens=3, metrics=config.evaluation_metrics)
    performance = evaluation.performance
    assert "first_word_match" in performance and "accuracy" not in performance  # accuracy is for label tasks
    assert performance["bits_per_token"] == pytest.approx(performance["loss"] / math.log(2))
    # A plug-in's direction counts in comparisons.
    rows = {row["metric"]: row for row in compare_models({"a": {"bits_per_token": 1.0}, "b": {"bits_per_token": 2.0}})}
    assert rows["bits_per_token"]["best"] == "a"


def test_config_rejects_unknown_and_unfit_metrics(plugin_module):
    with pytest.raises(ConfigError) as caught:
        make_config({"evaluation_metrics": ["accuracy", "vibes"]})
    message = str(caught.value)
    assert "evaluation_metrics" in message and "vibes" in message and "exact_match" in message  # lists the valid ones
    with pytest.raises(ConfigError, match="not_a_metric"):
        make_config({"evaluation_metrics": ["tf_test_metrics:not_a_metric"]})
    with pytest.raises(UnknownNameError):
        metric_specs(["vibes"])
    assert make_config({"evaluation_metrics": ["exact_match", "loss", "loss"]}).evaluation_metrics == ["exact_match", "loss"]
