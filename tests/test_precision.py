"""bf16 autocast trains (fused paths step aside under autocast); auto picks fp32 without native bf16."""

from __future__ import annotations

import json

import pytest

from tuneforge.model import precision


def test_auto_precision_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.parametrize("method", ["lora", "full"])
def test_bf16_autocast_training_runs_and_learns(train_run, method):
    run = train_run(precision="bf16", method=method, epochs=3, evaluate_base=False, learning_rate=1e-2).run_dir
    steps = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if '"train.step"' in line]
    losses = [step["loss"] for step in steps]
    assert all(isinstance(loss, float) for loss in losses)
    assert losses[-1] < losses[0]
