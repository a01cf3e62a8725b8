"""Scores of generated answers (against scikit-learn, sacrebleu, rouge-score) and model comparison."""

from __future__ import annotations

import pytest

from tuneforge.evaluate.compare import compare_models
from tuneforge.evaluate.metrics import (
    OTHER_LABEL,
    classification_metrics,
    exact_match,
    extract_label,
    is_label_task,
    normalize_answer,
    text_metrics,
)


def test_classification_metrics_against_sklearn():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    references = ["billing", "billing", "Refund", "refund", "shipping", "shipping"]
    predictions = ["billing", "The intent is billing.", "refund", "no idea", "billing", "Shipping!"]
    scores = classification_metrics(predictions, references)

    gold = ["billing", "billing", "refund", "refund", "shipping", "shipping"]
    predicted = ["billing", "billing", "refund", OTHER_LABEL, "billing", "shipping"]
    labels = ["billing", "refund", "shipping"]
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, labels=labels, average="macro", zero_division=0)
    assert scores["accuracy"] == pytest.approx(accuracy_score(gold, predicted)) == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx(precision)
    assert scores["recall"] == pytest.approx(recall)
    assert scores["f1_score"] == pytest.approx(f1)
    # By hand: billing P=2/3 R=1, refund P=1 R=1/2, shipping P=1 R=1/2.
    assert scores["precision"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert scores["recall"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # Strict exact match does not accept the sentence.
    assert scores["exact_match"] == pytest.approx(3 / 6)


def test_classification_metrics_perfect_and_all_wrong():
    refs = ["yes", "no", "yes", "no"]
    assert classification_metrics(refs, refs)["f1_score"] == 1.0
    wrong = classification_metrics(["no", "yes", "no", "yes"], refs)
    assert wrong["accuracy"] == 0.0 and wrong["f1_score"] == 0.0


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("The intent is billing.", "billing"),
        ("billing", "billing"),
        ("  BILLING!\nbecause the customer asked about an invoice", "billing"),
        ("It is about billing or a refund.", OTHER_LABEL),
        ("pre-billing questions", OTHER_LABEL),
        ("I cannot tell", OTHER_LABEL),
        ("", OTHER_LABEL),
    ],
)
def test_extract_label(prediction: str, expected: str):
    assert extract_label(prediction, ["billing", "refund", "shipping"]) == expected


def test_normalize_answer():
    assert normalize_answer('  "Blue."  \n\nsecond line') == "blue"
    assert normalize_answer("A   b\tc") == "a b c"


def test_is_label_task():
    assert is_label_task(["billing", "refund", "billing", "shipping", "refund", "billing"])
    assert is_label_task(["Yes", "no", "yes.", "No"])
    free_text = [
        "The sky looks blue because of Rayleigh scattering.",
        "Paris is the capital of France.",
        "Water boils at 100 degrees Celsius at sea level.",
        "A triangle has three sides.",
    ]
    assert not is_label_task(free_text)
    assert not is_label_task(["a", "b", "c", "d"])  # all distinct: not labels
    assert not is_label_task(["only one"])


def test_text_metrics_perfect_and_wrong():
    references = ["the sky is blue on a clear day", "grass is green after the spring rain"]
    perfect = text_metrics(references, references)
    assert perfect["bleu"] == pytest.approx(100.0)
    assert perfect["rouge_l"] == pytest.approx(1.0)
    partly = text_metrics(["the sky is red on a cloudy day", "grass is green after the rain"], references)
    assert 0 < partly["bleu"] < 100
    assert 0 < partly["rouge_l"] < 1
    wrong = text_metrics(["completely unrelated words here now", "nothing matches at all really"], references)
    assert wrong["bleu"] < partly["bleu"]
    assert wrong["rouge_l"] < partly["rouge_l"]


def test_text_metrics_perfect_short_answers():
    references = ["Paris", "Rome", "Berlin"]
    assert text_metrics(references, references)["bleu"] == pytest.approx(100.0)


def test_exact_match():
    assert exact_match(["Blue.", "green", "red"], ["blue", "green", "blue"]) == pytest.approx(2 / 3)
    assert exact_match([], []) == 0.0


def test_compare_models_marks_best():
    rows = compare_models(
        {
            "base": {"accuracy": 0.2, "loss": 2.5, "perplexity": 12.0, "bleu": 5.0},
            "tuned": {"accuracy": 0.9, "loss": 0.4, "perplexity": 1.5, "bleu": 3.0},
            "other": {"accuracy": 0.5, "loss": 3.0, "perplexity": 20.0},
        }
    )
    by_metric = {row["metric"]: row for row in rows}
    assert by_metric["accuracy"]["best"] == "tuned"
    assert by_metric["loss"]["best"] == "tuned"  # lower is better
    assert by_metric["perplexity"]["best"] == "tuned"
    assert by_metric["bleu"]["best"] == "base"
    assert by_metric["bleu"]["other"] is None
    assert by_metric["accuracy"]["base"] == 0.2
    # Known metrics come in a fixed order: accuracy before bleu before loss before perplexity.
    order = [row["metric"] for row in rows]
    assert order.index("accuracy") < order.index("bleu") < order.index("loss") < order.index("perplexity")


def test_compare_models_single_model_has_no_best():
    rows = compare_models({"only": {"accuracy": 0.5, "custom_score": 1.0}})
    assert [row["metric"] for row in rows] == ["accuracy", "custom_score"]
    assert all(row["best"] is None for row in rows)
