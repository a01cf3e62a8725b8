"""The health monitor in real training runs on the tiny model: every issue kind is provoked and caught, goes to
events.jsonl and results.json, and its policy (warn, stop, rollback) is applied; early stopping and the best
checkpoint as the final weights."""

from __future__ import annotations

import json
import mmap
import math
import random
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import read_events, write_jsonl
from tuneforge.config import make_config
from tuneforge.core.errors import TrainingError
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train import accumulation, loop
from tuneforge.train.checkpoint import list_checkpoints
from tuneforge.train.monitor import MonitorSettings
from tuneforge.train.validation import goal_reached, improvement_needed

# fp32: the provoked issues are tuned to fp32's numbers (bf16 rounding moves a spike or an overfit by a step).
QUICK = dict(evaluate_base=False, test_split=0.0, validation_split=0.0, saving_strategy="no", evaluation_strategy="no",
             batch_size=4, max_length=64, max_new_tokens=4, precision="fp32")


def issues_of(run_dir: Path) -> list[dict]:
    return [e for e in read_events(run_dir) if e["type"] == "issue.detected"]


def first(issues: list[dict], kind: str) -> dict:
    found = [issue for issue in issues if issue["kind"] == kind]
    assert found, (kind, [(i["kind"], i["step"]) for i in issues])
    return found[0]


class ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient (an exploding-gradient fault)."""

    @staticmethod
    def forward(ctx, value, factor):
        ctx.factor = factor
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class Faults:
    """Wraps the loss of chosen steps: spikes, gradient blow-ups, NaN/Inf, slow steps, leaked memory."""

    def __init__(self, monkeypatch) -> None:
        self.step = 0  # steps finished so far (from the train.step events)
        self.plan: dict[str, set[int]] = {}
        self.once: set[str] = set()  # kinds that strike only the first time their step is trained
        self.fired: set[tuple[str, int]] = set()
        self.leaked: list[torch.Tensor] = []
        real = accumulation.training_loss_sums

        def faulty(*args):
            sums = real(*args)
            step = self.step + 1
            for kind in self.once:
                if step in self.plan.get(kind, ()) and (kind, step) in self.fired:
                    return sums
                if step in self.plan.get(kind, ()):
                    self.fired.add((kind, step))
            if step in self.plan.get("spike", ()):
                sums.loss_sum = sums.loss_sum + 29 * sums.loss_sum.detach()  # 30x the loss, gradients unchanged
            if step in self.plan.get("explode", ()):
                sums.loss_sum = ScaleGradient.apply(sums.loss_sum, 1e4)
            if step in self.plan.get("nan", ()):
                sums.loss_sum = sums.loss_sum * float("nan")
            if step in self.plan.get("inf_gradient", ()):
                sums.loss_sum = ScaleGradient.apply(sums.loss_sum, float("inf"))
            if step in self.plan.get("slow", ()):
                time.sleep(1.0)
            if step in self.plan.get("leak", ()):
                # 12 MB of fresh anonymous pages, touched, kept: a tensor could reuse heap pages that earlier
                # tests in this process freed (glibc raises its mmap threshold after big frees), hiding the leak.
                block = mmap.mmap(-1, 12 * 2**20)
                block.write(b"\x01" * (12 * 2**20))
                self.leaked.append(block)
            return sums

        monkeypatch.setattr(accumulation, "training_loss_sums", faulty)

    def on_event(self, event: dict) -> None:
        if event.get("type") == "train.step":
            self.step = event["step"]
        elif event.get("type") == "train.rollback":
            self.step = event["to_step"]


@pytest.fixture
def faults(monkeypatch):
    return Faults(monkeypatch)


def run(tiny_model_dir, data, tmp_path, name="run", on_event=None, settings=None, **fields):
    values = {"data": str(data), "model": str(tiny_model_dir), "output": str(tmp_path / name), **QUICK, **fields}
    return FineTuningPipeline(make_config(values), on_event=on_event, monitor_settings=settings).train()


def test_spike_exploding_gradients_throughput_and_memory_are_caught_at_their_steps(tiny_model_dir, session_dataset, tmp_path, faults):
    faults.plan = {"spike": {12}, "explode": {16}, "slow": {26, 27, 28}, "leak": set(range(21, 41))}
    settings = MonitorSettings(memory_growth_mb=60, memory_growth_ratio=0.01)
    result = run(tiny_model_dir, session_dataset, tmp_path, on_event=faults.on_event, settings=settings, epochs=4,
                 learning_rate=1e-3, lr_scheduler="constant", warmup_steps=0)
    assert result.status == "succeeded" and result.train["steps"] == 40
    issues = issues_of(result.run_dir)
    spike = first(issues, "loss_spike")
    assert spike["step"] == 12 and spike["severity"] == "warning" and spike["action"] == "warn"
    assert "jumped" in spike["message"] and spike["suggestion"]
    assert first(issues, "exploding_gradients")["step"] == 16
    assert first(issues, "throughput_drop")["step"] == 28  # three slow steps from 26: the median of five turns at 28
    creep = first(issues, "memory_creep")
    assert 21 < creep["step"] <= 40 and creep["evidence"]["growth_mb"] > 60
    assert {"loss_spike", "exploding_gradients", "memory_creep"} <= {i["kind"] for i in result.issues}  # results.json too
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert [i["kind"] for i in saved["issues"]] == [i["kind"] for i in issues]
    assert "loss_spike" in (result.run_dir / "report.html").read_text()


def test_a_healthy_run_reports_no_issue(tiny_model_dir, session_dataset, tmp_path):
    result = run(tiny_model_dir, session_dataset, tmp_path, epochs=3, learning_rate=1e-3)
    # throughput depends on the other processes of a shared machine: it is the one kind a healthy run may see here.
    assert [i["kind"] for i in result.issues if i["kind"] != "throughput_drop"] == []


def test_non_finite_gradient_stops_before_the_update(tiny_model_dir, session_dataset, tmp_path, faults):
    faults.plan = {"inf_gradient": {5}}
    with pytest.raises(TrainingError) as caught:
        run(tiny_model_dir, session_dataset, tmp_path, on_event=faults.on_event, epochs=1, saving_strategy="steps", save_steps=2)
    assert "step 5" in str(caught.value) and "step-000004" in str(caught.value)  # names the last good checkpoint
    issue = first(issues_of(tmp_path / "run"), "nan_gradient")
    assert issue["step"] == 5 and issue["severity"] == "error" and issue["action"] == "stop"
    for checkpoint in list_checkpoints(tmp_path / "run" / "checkpoints"):  # no checkpoint holds a non-finite tensor
        tensors = load_file(str(checkpoint / "weights" / "adapter_model.safetensors"))
        assert all(torch.isfinite(t).all() for t in tensors.values())


def test_nan_loss_under_warn_skips_that_update_and_goes_on(tiny_model_dir, session_dataset, tmp_path, faults):
    faults.plan = {"nan": {4}}
    result = run(tiny_model_dir, session_dataset, tmp_path, on_event=faults.on_event, epochs=1, on_issue="nan_loss=warn")
    assert result.status == "succeeded" and result.train["steps"] == 10 and result.train["skipped_steps"] == 1
    assert [(i["kind"], i["step"], i["action"]) for i in result.issues] == [("nan_loss", 4, "warn")]
    skipped = [e for e in read_events(result.run_dir) if e["type"] == "train.step" and e.get("skipped")]
    assert [e["step"] for e in skipped] == [4]
    adapter = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in adapter.values())


def test_nan_loss_under_rollback_goes_back_to_the_last_checkpoint_with_half_the_learning_rate(
    tiny_model_dir, session_dataset, tmp_path, faults
):
    faults.plan, faults.once = {"nan": {8}}, {"nan"}  # a transient fault: step 8 is fine the second time
    result = run(tiny_model_dir, session_dataset, tmp_path, on_event=faults.on_event, epochs=1, on_issue="nan_loss=rollback",
                 saving_strategy="steps", save_steps=3, lr_scheduler="constant", warmup_steps=0, learning_rate=2e-3)
    assert result.status == "succeeded" and result.train["steps"] == 10 and result.train["rollbacks"] == 1
    assert [(i["kind"], i["step"], i["action"]) for i in result.issues] == [("nan_loss", 8, "rollback")]
    events = read_events(result.run_dir)
    rollback = next(e for e in events if e["type"] == "train.rollback")
    assert (rollback["from_step"], rollback["to_step"], rollback["learning_rate_scale"]) == (8, 6, 0.5)
    rates = {e["step"]: e["learning_rate"] for e in events if e["type"] == "train.step"}  # the last value per step
    assert rates[6] == pytest.approx(2e-3) and rates[7] == rates[10] == pytest.approx(1e-3)
    adapter = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in adapter.values())


def test_learning_rate_too_high(tiny_model_dir, session_dataset, tmp_path):
    result = run(tiny_model_dir, session_dataset, tmp_path, method="full", learning_rate=0.5, max_grad_norm=None,
                 epochs=2, warmup_steps=0)
    issue = first(result.issues, "lr_too_high")
    assert issue["step"] <= 15 and "too high" in issue["message"] and "--learning-rate" in issue["suggestion"]


def test_learning_rate_too_low(tiny_model_dir, session_dataset, tmp_path):
    result = run(tiny_model_dir, session_dataset, tmp_path, learning_rate=1e-7, epochs=4, max_steps=33, warmup_steps=2,
                 lr_scheduler="constant")
    issue = first(result.issues, "lr_too_low")
    assert issue["step"] == 32 and issue["severity"] == "info" and "raise --learning-rate" in issue["suggestion"]


def test_plateau(tiny_model_dir, tmp_path):
    """LoRA of rank 1 learns the little it can within a few steps, then the loss stays flat."""
    rng = random.Random(0)
    rows = [{"input": "pick a colour" + " " * (i % 2), "output": rng.choice(["red", "green", "blue"])} for i in range(40)]
    data = write_jsonl(tmp_path / "flat.jsonl", rows)
    result = run(tiny_model_dir, data, tmp_path, settings=MonitorSettings(plateau_steps=15), lora_r=1, learning_rate=3e-2,
                 epochs=5, max_steps=45, warmup_steps=0, lr_scheduler="constant")
    issue = first(result.issues, "plateau")
    assert issue["severity"] == "info" and "not improved" in issue["message"]


def test_divergence_rolls_back_with_a_lower_learning_rate_then_stops(tiny_model_dir, session_dataset, tmp_path, monkeypatch):
    """A schedule that jumps the learning rate 300x at step 16 makes the loss climb: roll back once, then stop."""
    from torch.optim.lr_scheduler import LambdaLR

    monkeypatch.setattr(loop, "build_scheduler", lambda optimizer, kind, warmup, total: LambdaLR(
        optimizer, lambda step: 1.0 if step < 15 else 300.0))
    result = run(tiny_model_dir, session_dataset, tmp_path, method="full", learning_rate=2e-3, max_grad_norm=None,
                 epochs=4, saving_strategy="steps", save_steps=5, on_issue="divergence=rollback,lr_too_high=ignore,loss_spike=ignore",
                 max_rollbacks=1, rollback_lr_factor=0.5)
    events = read_events(result.run_dir)
    divergence = [i for i in result.issues if i["kind"] == "divergence"]
    assert divergence and divergence[0]["action"] == "rollback" and divergence[0]["severity"] == "error"
    rollback = next(e for e in events if e["type"] == "train.rollback")
    assert rollback["to_step"] <= 15 and rollback["learning_rate_scale"] == 0.5
    assert rollback["to_step"] <= divergence[0]["since_step"]
    # After the rollback the learning rate is half what it was at the same step before.
    steps = [e for e in events if e["type"] == "train.step"]
    after = next(e for e in steps if e["seq"] > rollback["seq"])
    before = next(e for e in steps if e["step"] == after["step"] and e["seq"] < rollback["seq"])
    assert after["learning_rate"] == pytest.approx(before["learning_rate"] * 0.5)
    # The jump is still in the schedule, so it diverges again; one rollback allowed: it stops instead.
    assert any(e["type"] == "train.rollback_refused" for e in events)
    assert result.status == "succeeded" and result.train["stopped_early"]["reason"] == "divergence"
    assert result.train["rollbacks"] == 1


def disjoint_answers(tmp_path: Path) -> tuple[Path, Path]:
    """Training answers from one set of words, validation answers from another: memorising one hurts the other."""
    rng = random.Random(0)
    words = ["apple", "stone", "river", "cloud", "lamp", "tiger", "violin", "paper", "maple", "quartz"]
    train = [{"input": f"item {i}", "output": f"{rng.choice(words[:5])} {rng.choice(words[:5])}"} for i in range(24)]
    validation = [{"input": f"item {i}", "output": f"{rng.choice(words[5:])} {rng.choice(words[5:])}"} for i in range(100, 108)]
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "validation.jsonl", validation)


OVERFIT = dict(method="full", learning_rate=1e-2, epochs=8, lr_scheduler="constant", warmup_steps=0,
               evaluation_strategy="epoch", saving_strategy="epoch", save_total_limit=1)


def test_overfitting_stops_under_early_stopping_and_the_best_checkpoint_becomes_the_model(tiny_model_dir, tmp_path):
    train, validation = disjoint_answers(tmp_path)
    result = run(tiny_model_dir, train, tmp_path, validation_data=str(validation), early_stopping=True,
                 early_stopping_patience=3, **OVERFIT)
    events = read_events(result.run_dir)
    evaluations = [(e["step"], e["validation_loss"]) for e in events if e["type"] == "eval.result"]
    best_step, best_loss = min(evaluations, key=lambda item: item[1])
    overfitting = first(result.issues, "overfitting")
    assert overfitting["action"] == "stop" and overfitting["since_step"] == best_step
    assert result.train["stopped_early"] == {"step": overfitting["step"], "reason": "overfitting"}
    assert result.train["steps"] == overfitting["step"] < 48
    assert result.train["best_step"] == best_step and result.train["best_metric"] == "validation_loss"
    assert result.train["best_metric_value"] == pytest.approx(best_loss)
    assert result.train["final_weights_step"] == best_step
    # Only one recent checkpoint is kept (save_total_limit 1), and the best one besides it.
    kept = [p.name for p in list_checkpoints(result.run_dir / "checkpoints")]
    assert f"step-{best_step:06d}" in kept and len(kept) <= 2
    # model/ holds the best checkpoint's weights, and the tuned evaluation was of them.
    best = load_file(str(result.run_dir / "checkpoints" / f"step-{best_step:06d}" / "weights" / "model.safetensors"))
    final = load_file(str(result.run_dir / "model" / "model.safetensors"))
    assert best.keys() == final.keys() and all(torch.equal(best[k], final[k]) for k in best)
    assert any(e["type"] == "train.best_selected" and e["step"] == best_step for e in events)


def test_early_stopping_patience_and_min_delta(tiny_model_dir, tmp_path):
    train, validation = disjoint_answers(tmp_path)
    result = run(tiny_model_dir, train, tmp_path, validation_data=str(validation), early_stopping=True,
                 early_stopping_patience=2, on_issue="overfitting=warn", **OVERFIT)
    events = read_events(result.run_dir)
    stopped = next(e for e in events if e["type"] == "train.early_stopped")
    losses = [e["validation_loss"] for e in events if e["type"] == "eval.result"]
    best_index = losses.index(min(losses))
    assert len(losses) == best_index + 3  # two evaluations without improvement, then stop
    assert result.train["stopped_early"]["reason"] == "early_stopping" and stopped["patience"] == 2
    # With a min_delta larger than any improvement, the second evaluation already counts as "no improvement".
    strict = run(tiny_model_dir, train, tmp_path, name="strict", validation_data=str(validation), early_stopping=True,
                 early_stopping_patience=1, early_stopping_min_delta=10.0, **OVERFIT)
    assert strict.train["steps"] == 12 and strict.train["stopped_early"]["reason"] == "early_stopping"
    # A relative delta of 99 %: only a loss that falls to a hundredth of the best counts; the same early stop.
    relative = run(tiny_model_dir, train, tmp_path, name="relative", validation_data=str(validation), early_stopping=True,
                   early_stopping_patience=1, early_stopping_relative_delta=0.99, **OVERFIT)
    assert relative.train["steps"] == 12 and relative.train["stopped_early"]["reason"] == "early_stopping"


def test_reaching_the_goal_stops_at_that_evaluation(tiny_model_dir, tmp_path):
    train, validation = disjoint_answers(tmp_path)
    result = run(tiny_model_dir, train, tmp_path, name="goal", validation_data=str(validation), early_stopping=True,
                 early_stopping_goal=100.0, **OVERFIT)  # any loss is under 100: the first evaluation ends the run
    first_eval = next(e for e in read_events(result.run_dir) if e["type"] == "eval.result")
    stopped = next(e for e in read_events(result.run_dir) if e["type"] == "train.early_stopped")
    assert result.train["steps"] == first_eval["step"] and stopped["goal"] == 100.0 and "goal" in stopped["message"]
    accuracy = make_config({"early_stopping_goal": 0.9, "best_metric": "validation_accuracy"})
    assert goal_reached(accuracy, 0.95, -1.0) and not goal_reached(accuracy, 0.85, -1.0)
    assert not goal_reached(make_config({}), 0.0, 1.0)  # no goal set: never


def test_an_improvement_must_beat_both_the_absolute_and_the_relative_delta():
    config = make_config({"early_stopping_min_delta": 0.001, "early_stopping_relative_delta": 0.05})
    assert improvement_needed(config, 2.0) == pytest.approx(0.1)  # 5 % of a large loss
    assert improvement_needed(config, 0.01) == pytest.approx(0.001)  # a loss this small: the absolute floor
    assert improvement_needed(make_config({}), 0.5) == 0.0  # the defaults: any improvement counts


def test_final_weights_last_keeps_the_last_step(tiny_model_dir, tmp_path):
    train, validation = disjoint_answers(tmp_path)
    # Early stopping off: auto's (patience 1 when evaluated once an epoch) would end this overfitting run at step 18.
    result = run(tiny_model_dir, train, tmp_path, validation_data=str(validation), final_weights="last",
                 early_stopping=False, on_issue="overfitting=warn", **{**OVERFIT, "epochs": 5})
    assert result.train["final_weights_step"] == result.train["steps"] == 30
    assert result.train["best_step"] < 30
    assert not any(e["type"] == "train.best_selected" for e in read_events(result.run_dir))
