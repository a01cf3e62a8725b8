"""Finding 9, the monitor's part: ``TrainingMetrics`` (typed step/evaluation metrics), ``TrainingMonitor`` with
``validate_results``, and both exported from ``tuneforge``."""

from __future__ import annotations

import math

import pytest

import tuneforge
from helpers import read_events
from tuneforge.train.metrics import ExampleCounts, TrainingMetrics
from tuneforge.train.monitor import TrainingMonitor


def test_the_seed_vocabulary_is_exported_from_the_package():
    for name in ("TrainingMonitor", "TrainingMetrics", "Issue", "ResultFinding", "MonitorSettings"):
        assert name in tuneforge.__all__ and getattr(tuneforge, name).__name__ == name
    monitor = tuneforge.TrainingMonitor()
    for method in ("track_metrics", "detect_issues", "validate_results", "generate_report"):
        assert callable(getattr(monitor, method))


def test_training_metrics_round_trips_a_train_step_event_unchanged(train_run):
    result = train_run(epochs=1, evaluate_base=False, test_split=0.0, saving_strategy="no")
    events = read_events(result.run_dir)
    step = next(e for e in events if e["type"] == "train.step")
    metrics = TrainingMetrics.from_event(step)
    assert metrics.step == 1 and metrics.loss == step["loss"] and metrics.epoch_progress == step["epoch"]
    assert metrics.examples == ExampleCounts(step["examples"]["processed"], step["examples"]["total"])
    assert metrics.perplexity == pytest.approx(math.exp(metrics.loss), rel=1e-4)
    assert metrics.learning_rate == step["learning_rate"] and metrics.trained_tokens > 0 and not metrics.is_evaluation
    assert metrics.to_dict() == {k: v for k, v in step.items() if k not in ("seq", "time", "type")}
    evaluation = next(e for e in events if e["type"] == "eval.result")
    typed = TrainingMetrics.from_event(evaluation)
    assert typed.is_evaluation and typed.validation_accuracy == evaluation["validation_accuracy"]
    assert typed.to_dict() == {k: v for k, v in evaluation.items() if k not in ("seq", "time", "type")}


def test_non_finite_values_written_as_strings_come_back_as_floats():
    metrics = TrainingMetrics.from_event({"type": "train.step", "step": 4, "loss": "nan", "grad_norm": "inf", "skipped": True})
    assert math.isnan(metrics.loss) and metrics.grad_norm == math.inf and metrics.skipped


def test_track_metrics_takes_a_training_metrics_or_a_dict_alike():
    as_dicts, as_typed = TrainingMonitor(), TrainingMonitor()
    stream = [{"step": s, "loss": 3.0 - 0.03 * s + 0.01 * (s % 3), "grad_norm": 1.0, "trained_tokens": 40}
              for s in range(1, 30)]
    stream.append({"step": 30, "loss": 40.0, "grad_norm": 1.0, "trained_tokens": 40})
    found_dicts = [i.kind for m in stream for i in as_dicts.track_metrics(m)]
    found_typed = [i.kind for m in stream for i in as_typed.track_metrics(TrainingMetrics.from_event(m))]
    assert found_dicts == found_typed == ["loss_spike"]
    assert as_typed.track_metrics(TrainingMetrics(step=30, validation_loss=2.0)) == []
    assert as_typed.evaluations[-1]["validation_loss"] == 2.0


def rows(pairs, **fields):
    return [{"input": f"question {i}", "reference": ref, "prediction": pred, **fields} for i, (ref, pred) in enumerate(pairs)]


def findings(predictions) -> dict:
    return {f.kind: f for f in TrainingMonitor().validate_results(predictions)}


def test_validate_results_of_good_answers_finds_nothing():
    assert findings(rows([("red", "red"), ("blue", "Blue."), ("green", "green"), ("red", "red"), ("blue", "blue")])) == {}


def test_validate_results_finds_empty_answers_and_counts_them():
    found = findings(rows([("red", ""), ("blue", "  "), ("green", "green"), ("red", "red")]))
    empty = found["empty_answers"]
    assert (empty.count, empty.total, empty.severity) == (2, 4, "warning") and "2 of 4 answers (50%) are empty" in empty.message
    assert [e["index"] for e in empty.examples] == [0, 1] and empty.suggestion


def test_validate_results_finds_answers_that_repeat_the_prompt():
    predictions = [{"input": "what colour is the sky?", "reference": "blue", "prediction": "What colour is the sky? It is"},
                   {"input": "what colour is grass?", "reference": "green", "prediction": "green"}]
    echo = findings(predictions)["prompt_echo"]
    assert echo.count == 1 and echo.examples[0]["prediction"].startswith("What colour") and "repeat the prompt" in echo.message


def test_validate_results_finds_a_collapse_to_one_label_and_the_labels_never_answered():
    pairs = [("red", "red"), ("blue", "red"), ("green", "red"), ("blue", "red"), ("green", "red"), ("red", "red"),
             ("blue", "red"), ("green", "red"), ("red", "red"), ("blue", "blue")]
    found = findings(rows(pairs))
    collapse = found["label_collapse"]
    assert collapse.count == 9 and "'red'" in collapse.message and "3 different values" in collapse.message
    unmatched = found["unmatched_references"]
    assert "1 of the 3 reference labels were never answered: 'green' (3 rows)" in unmatched.message
    assert unmatched.count == 3 and all(e["reference"] == "green" for e in unmatched.examples)


def test_validate_results_finds_answers_that_never_end():
    predictions = rows([("blue", "blue blue blue blue"), ("red", "red")])
    predictions[0]["finish_reason"] = "length"
    cut = findings(predictions)["never_ends"]
    assert cut.count == 1 and "token limit" in cut.message


def test_validate_results_reads_predictions_jsonl_rows_and_model_evaluations():
    from tuneforge.evaluate.run import ModelEvaluation

    jsonl_rows = [{"input": f"q{i}", "reference": "red" if i % 2 else "blue", "base": "x", "tuned": ""} for i in range(6)]
    assert findings(jsonl_rows)["empty_answers"].count == 6  # the tuned answer is the one checked
    evaluation = ModelEvaluation({}, {}, "classification", predictions=rows([("red", ""), ("blue", "blue")]))
    assert findings(evaluation)["empty_answers"].to_dict()["count"] == 1
    assert TrainingMonitor().validate_results([]) == []


def test_a_run_checks_its_tuned_answers_into_results_json(lora_run):
    """The pipeline runs validate_results on the tuned answers: results.json and events carry what it found."""
    import json

    from helpers import read_events
    from tuneforge.train.result_checks import check_predictions

    saved = json.loads((lora_run.run_dir / "results.json").read_text())
    rows = [json.loads(line) for line in (lora_run.run_dir / "predictions.jsonl").read_text().splitlines()]
    expected = [finding.to_dict() for finding in check_predictions(rows)]
    assert saved["result_checks"] == expected
    announced = [e["kind"] for e in read_events(lora_run.run_dir) if e["type"] == "results.checked"]
    assert announced == [finding["kind"] for finding in expected]
