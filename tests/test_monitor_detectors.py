"""TrainingMonitor on synthetic metric streams: each issue kind is found where it starts, and a healthy run
raises nothing. (tests/test_monitor_runs.py provokes the same kinds in real training runs.)"""

from __future__ import annotations

import math
import random

import pytest

from tuneforge.train.monitor import SEVERITY, MonitorSettings, TrainingMonitor


def healthy(step: int, rng: random.Random) -> dict:
    """A noisy, slowly falling loss with steady gradients, throughput and memory."""
    return {"step": step, "loss": 3.0 * math.exp(-step / 80) + 0.5 + rng.gauss(0, 0.05), "grad_norm": 1.0 + rng.gauss(0, 0.1),
            "learning_rate": 1e-3, "step_tokens_per_second": 1000 + rng.gauss(0, 40), "memory_mb": 900 + rng.gauss(0, 3)}


def feed(monitor: TrainingMonitor, stream) -> list:
    found = []
    for metrics in stream:
        found += monitor.track_metrics(metrics)
    return found


def kinds(issues) -> list[tuple[str, int]]:
    return [(issue.kind, issue.step) for issue in issues]


def test_a_healthy_run_raises_nothing():
    rng = random.Random(0)
    monitor = TrainingMonitor(warmup_steps=10, total_steps=300)
    issues = feed(monitor, (healthy(step, rng) for step in range(1, 301)))
    evaluations = [monitor.track_metrics({"step": s, "validation_loss": 3.0 * math.exp(-s / 80) + 0.6}) for s in range(50, 301, 50)]
    assert issues == [] and all(found == [] for found in evaluations)


@pytest.mark.parametrize("value, kind", [(float("nan"), "nan_loss"), (float("inf"), "nan_loss")])
def test_non_finite_loss(value, kind):
    monitor = TrainingMonitor()
    rng = random.Random(1)
    feed(monitor, (healthy(s, rng) for s in range(1, 5)))
    issues = monitor.track_metrics({"step": 5, "loss": value, "grad_norm": float("nan")})
    assert kinds(issues) == [(kind, 5)]
    assert issues[0].severity == "error" and str(value) in issues[0].message and "--learning-rate" in issues[0].suggestion
    assert len(monitor.losses) == 4  # a non-finite step is not part of the history


def test_non_finite_gradient_with_a_finite_loss():
    issues = TrainingMonitor().track_metrics({"step": 1, "loss": 2.0, "grad_norm": float("inf")})
    assert kinds(issues) == [("nan_gradient", 1)]
    assert "gradient norm is inf" in issues[0].message


def test_loss_spike_by_robust_z_score():
    rng = random.Random(2)
    monitor = TrainingMonitor(warmup_steps=5, total_steps=100)
    feed(monitor, (healthy(s, rng) for s in range(1, 40)))
    spike = {**healthy(40, rng), "loss": 9.0}
    issues = monitor.track_metrics(spike)
    assert kinds(issues) == [("loss_spike", 40)]
    assert issues[0].evidence["z_score"] > 6 and "jumped to 9" in issues[0].message
    # A second spike right after is inside the cool-down: reported once.
    assert monitor.track_metrics({**healthy(41, rng), "loss": 9.5}) == []


def test_divergence_is_a_rising_trend_above_the_best():
    rng = random.Random(3)
    monitor = TrainingMonitor(total_steps=200)
    stream = [healthy(s, rng) for s in range(1, 60)]
    stream += [{**healthy(s, rng), "loss": 2.5 + 0.15 * (s - 60) + rng.gauss(0, 0.05)} for s in range(60, 90)]
    issues = feed(monitor, stream)
    divergence = [i for i in issues if i.kind == "divergence"]
    assert divergence and 62 <= divergence[0].step <= 75, divergence
    assert divergence[0].severity == "error" and divergence[0].since_step < 60  # where to roll back to
    assert "rising" in divergence[0].message


def test_a_noisy_loss_near_zero_is_not_divergence():
    """Small batches late in training: the loss wobbles between 0.05 and 0.4 — 2x ratios, no trend in nats."""
    rng = random.Random(5)
    monitor = TrainingMonitor(total_steps=200)
    stream = [{**healthy(s, rng), "loss": max(0.02, 2.0 * 0.9 ** s + rng.uniform(0.0, 0.1))} for s in range(1, 60)]
    stream += [{**healthy(s, rng), "loss": 0.05 + 0.01 * (s - 60) + rng.uniform(0.0, 0.1)} for s in range(60, 80)]
    assert [i for i in feed(monitor, stream) if i.kind == "divergence"] == []


def test_exploding_gradients():
    rng = random.Random(4)
    monitor = TrainingMonitor()
    feed(monitor, (healthy(s, rng) for s in range(1, 30)))
    issues = monitor.track_metrics({**healthy(30, rng), "grad_norm": 80.0})
    assert kinds(issues) == [("exploding_gradients", 30)] and issues[0].evidence["grad_norm"] == 80.0


def test_overfitting_needs_validation_rising_while_training_falls():
    monitor = TrainingMonitor(MonitorSettings(overfitting_evals=2))
    step = 0
    found = []
    for validation, train in [(2.0, 2.5), (1.8, 2.0), (1.9, 1.6), (2.1, 1.2)]:
        for _ in range(10):
            step += 1
            monitor.track_metrics({"step": step, "loss": train, "grad_norm": 1.0})
        found += monitor.track_metrics({"step": step, "validation_loss": validation})
    assert kinds(found) == [("overfitting", 40)]
    assert found[0].since_step == 20 and "memorising" in found[0].message and "--early-stopping" in found[0].suggestion
    # Validation rising while training rises too is not overfitting.
    other = TrainingMonitor()
    found = []
    for index, validation in enumerate([1.0, 1.1, 1.2]):
        for _ in range(5):
            other.track_metrics({"step": index * 5 + 1, "loss": 1.0 + index, "grad_norm": 1.0})
        found += other.track_metrics({"step": index * 5 + 5, "validation_loss": validation})
    assert found == []


def test_plateau_after_improving_while_the_learning_rate_is_high():
    monitor = TrainingMonitor(MonitorSettings(plateau_steps=30), total_steps=200)
    stream = [{"step": s, "loss": 3.0 - 0.05 * s, "grad_norm": 1.0, "learning_rate": 1e-3} for s in range(1, 31)]
    stream += [{"step": s, "loss": 1.5 + 0.01 * (s % 2), "grad_norm": 1.0, "learning_rate": 1e-3} for s in range(31, 100)]
    issues = feed(monitor, stream)
    assert [i.kind for i in issues] == ["plateau"] and issues[0].severity == "info"
    # The same flat loss at the end of a decayed schedule is expected, not an alarm.
    decayed = TrainingMonitor(MonitorSettings(plateau_steps=30), total_steps=200)
    stream = [{**m, "learning_rate": 1e-3 if m["step"] < 31 else 1e-5} for m in stream]
    assert feed(decayed, stream) == []


def test_learning_rate_too_high_when_the_loss_climbs_above_its_start():
    monitor = TrainingMonitor(warmup_steps=2, total_steps=100)
    stream = [{"step": s, "loss": 3.0 + 0.2 * s, "grad_norm": 5.0, "learning_rate": 0.5} for s in range(1, 15)]
    issues = feed(monitor, stream)
    assert "lr_too_high" in [i.kind for i in issues]
    high = next(i for i in issues if i.kind == "lr_too_high")
    assert "1.0e-01" in high.suggestion  # a concrete lower rate: 0.5 / 5


def test_learning_rate_too_low_when_the_loss_does_not_move():
    rng = random.Random(5)
    monitor = TrainingMonitor(warmup_steps=5, total_steps=200)
    stream = [{"step": s, "loss": 3.0 + rng.gauss(0, 0.01), "grad_norm": 0.5, "learning_rate": 1e-7} for s in range(1, 60)]
    issues = feed(monitor, stream)
    assert kinds(issues) == [("lr_too_low", 35)]  # warm-up 5 + 30 steps
    assert "5.0e-07" in issues[0].suggestion


def test_throughput_drop():
    rng = random.Random(6)
    monitor = TrainingMonitor()
    stream = [healthy(s, rng) for s in range(1, 30)]
    stream += [{**healthy(s, rng), "step_tokens_per_second": 150.0} for s in range(30, 35)]
    issues = feed(monitor, stream)
    assert kinds(issues) == [("throughput_drop", 32)]  # the median of the last five is low from the third slow step
    assert issues[0].evidence["typical_tokens_per_second"] > 900


def test_memory_creep_from_the_settled_level():
    rng = random.Random(7)
    monitor = TrainingMonitor(MonitorSettings(memory_growth_mb=100, memory_growth_ratio=0.05))
    stream = [healthy(s, rng) for s in range(1, 21)]
    stream += [{**healthy(s, rng), "memory_mb": 900 + 12 * (s - 20)} for s in range(21, 60)]
    issues = feed(monitor, stream)
    assert [i.kind for i in issues] == ["memory_creep"]
    assert issues[0].evidence["growth_mb"] > 100 and "MB" in issues[0].message


def test_memory_that_grows_once_and_stays_is_not_creep():
    rng = random.Random(8)
    monitor = TrainingMonitor(MonitorSettings(memory_growth_mb=100, memory_growth_ratio=0.05))
    stream = [healthy(s, rng) for s in range(1, 21)]
    stream += [{**healthy(s, rng), "memory_mb": 1400 + rng.gauss(0, 3)} for s in range(21, 80)]
    assert feed(monitor, stream) == []


def test_state_round_trip_continues_the_same_verdicts():
    rng = random.Random(9)
    stream = [healthy(s, rng) for s in range(1, 40)] + [{**healthy(40, rng), "loss": 9.0}]
    whole = TrainingMonitor()
    expected = feed(whole, stream)
    first = TrainingMonitor()
    feed(first, stream[:25])
    second = TrainingMonitor()
    second.load_state_dict(first.state_dict())
    assert kinds(feed(second, stream[25:])) == kinds(expected) == [("loss_spike", 40)]
    assert second.state_dict()["losses"] == whole.state_dict()["losses"]


def test_every_kind_has_a_severity_and_a_default_action():
    from tuneforge.config import DEFAULT_ISSUE_ACTIONS, ISSUE_KINDS, make_config

    assert set(SEVERITY) == set(ISSUE_KINDS) == set(DEFAULT_ISSUE_ACTIONS)
    assert DEFAULT_ISSUE_ACTIONS["nan_loss"] == "stop" and DEFAULT_ISSUE_ACTIONS["overfitting"] == "warn"
    assert make_config({"early_stopping": True}).issue_actions["overfitting"] == "stop"
    assert make_config({"early_stopping": True, "on_issue": "overfitting=warn"}).issue_actions["overfitting"] == "warn"
