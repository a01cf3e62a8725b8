"""What the dashboard reads from a run directory: curves (one point per step, the last written), the issue
timeline with its explanations, the live stream's messages, and test answers marked fixed / broken / still wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from tuneforge.server.dashboard import views  # noqa: E402

EVENTS = [
    {"seq": 0, "type": "train.started", "total_steps": 3},
    {"seq": 1, "type": "train.step", "step": 1, "loss": 2.0, "learning_rate": 1e-3, "memory_mb": 500.0},
    {"seq": 2, "type": "train.step", "step": 2, "loss": float("nan"), "learning_rate": 9e-4},
    {"seq": 3, "type": "issue.detected", "step": 2, "kind": "nan_loss", "severity": "error", "message": "the loss is NaN",
     "suggestion": "lower the learning rate", "action": "rollback"},
    {"seq": 4, "type": "train.step", "step": 2, "loss": 1.5, "learning_rate": 4.5e-4},  # re-done after the rollback
    {"seq": 5, "type": "eval.result", "step": 2, "validation_loss": 1.7},
    {"seq": 6, "type": "checkpoint.saved", "step": 2, "path": "checkpoints/step-2", "best": True},
    {"seq": 7, "type": "eval.result", "step": 3, "validation_loss": 1.6},
]


def test_curves_keep_the_last_value_of_each_step_and_skip_non_finite_ones() -> None:
    found = views.curves(EVENTS)
    assert found["loss"] == [[1.0, 2.0], [2.0, 1.5]]
    assert found["learning_rate"] == [[1.0, 1e-3], [2.0, 4.5e-4]]
    assert found["validation_loss"] == [[2.0, 1.7], [3.0, 1.6]] and found["memory_mb"] == [[1.0, 500.0]]
    assert views.best_validation_loss(EVENTS, {}) == 1.6
    assert views.best_validation_loss(EVENTS, {"train": {"best_validation_loss": 1.55}}) == 1.55


def test_the_timeline_explains_issues_and_names_milestones() -> None:
    rows = views.timeline(EVENTS)
    issue, checkpoint = rows
    assert issue == {"step": 2, "kind": "issue", "severity": "error", "title": "nan_loss", "text": "the loss is NaN",
                     "explanation": "lower the learning rate", "action": "rollback"}
    assert checkpoint["kind"] == "event" and "checkpoints/step-2" in checkpoint["text"] and "best" in checkpoint["text"]


def test_live_events_carry_their_points_and_timeline_rows() -> None:
    step = views.live_event(EVENTS[4])
    assert step["seq"] == 4 and step["points"] == {"loss": [2.0, 1.5], "learning_rate": [2.0, 4.5e-4]}
    assert views.live_event(EVENTS[3])["timeline"]["explanation"] == "lower the learning rate"
    assert views.live_event({"seq": 9, "type": "data.loaded"}) is None


def test_predictions_are_marked_fixed_broken_still_wrong_or_right(tmp_path: Path) -> None:
    rows = [{"input": "a", "reference": "red", "base": "blue", "tuned": "red"},
            {"input": "b", "reference": "red", "base": "red", "tuned": "blue"},
            {"input": "c", "reference": "blue", "base": "red", "tuned": "green"},
            {"input": "d", "reference": "blue", "base": "blue", "tuned": "blue"}]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"error_analysis": {"task": "classification", "confusion": {"labels": ["blue", "green", "red"]}}}
    marked = [r["outcome"] for r in views.predictions(tmp_path, results)]
    assert marked == ["fixed", "broken", "still wrong", "right"]
    assert views.predictions(tmp_path / "missing", results) == []


def test_the_compare_table_marks_the_best_run_per_metric() -> None:
    table = {row["metric"]: row for row in views.compare_table({"a": {"accuracy": 0.5, "loss": 1.0},
                                                               "b": {"accuracy": 0.7, "loss": 1.2}, "c": {}})}
    assert table["accuracy"]["best"] == "b" and table["loss"]["best"] == "a"


def test_results_performances_are_base_baselines_then_tuned() -> None:
    results = {"base": {"accuracy": 0.2}, "tuned": {"accuracy": 0.9},
               "baselines": {"few_shot": {"label": "few-shot", "performance": {"accuracy": 0.5}}, "empty": {}}}
    found = views.performances(results)
    assert list(found) == ["base", "few_shot", "tuned"]
    assert views.compare_table(found)[0]["best"] == "tuned"
