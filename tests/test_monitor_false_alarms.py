"""Finding 10: a healthy run raises no alarm, whatever its shape, while real faults are still caught.

A step's loss is a mean over its labelled tokens, so a run of one-token answers in batches of 8
(~16 answer tokens a step) has a loss that jumps 3-5x between batches by chance alone: one wrong
answer more or less. The monitor must allow for the count (``trained_tokens``), not call it a spike.

Measured on the tiny model, full fine-tuning, the four shapes below x four seeds (16 runs per rate):

    learning rate   before                                                   after
    3e-3            5 alarms (batch 1: divergence 2, loss_spike 2, gradient 1)   0
    5e-3            21 (exploding_gradients 10, loss_spike 6, divergence 5)      4, in 3 runs: a gradient 37-48x
                                                                                 its median, once with the loss
                                                                                 jumping from 2.3 to 11.3 nats
                                                                                 (a real instability at that rate)
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from helpers import write_jsonl
from tuneforge.config import make_config
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train.monitor import MonitorSettings, TrainingMonitor, sampling_noise

# ---------------------------------------------------------------- the finding's stream, synthetic


def one_token_answer_steps(steps: int, tokens: int, accuracy: float, seed: int, with_counts: bool = True) -> list[dict]:
    """Steps of ``tokens`` answer tokens each: right ones cost ~0.02 nats, wrong ones ~3 (an 88 %-accurate model)."""
    rng = random.Random(seed)
    stream = []
    for step in range(1, steps + 1):
        right = accuracy - (accuracy - 0.25) * math.exp(-step / 40)  # learns the task, slower and slower
        per_token = [rng.uniform(0.005, 0.04) if rng.random() < right else rng.uniform(1.5, 4.5) for _ in range(tokens)]
        learning_rate = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))  # the default cosine schedule
        metrics = {"step": step, "loss": sum(per_token) / tokens, "grad_norm": 1.0 + rng.gauss(0, 0.1),
                   "learning_rate": learning_rate, "memory_mb": 900.0}
        if with_counts:
            metrics["trained_tokens"] = tokens
        stream.append(metrics)
    stream[0]["loss"] = 6.0  # the untrained model: about ln(vocabulary) per token
    return stream


def spikes(monitor: TrainingMonitor, stream: list[dict]) -> list[tuple[str, int]]:
    found = []
    for metrics in stream:
        found += [(issue.kind, issue.step) for issue in monitor.track_metrics(metrics)]
    return found


@pytest.mark.parametrize("seed", range(5))
def test_one_token_answers_in_batches_of_8_raise_no_spike_once_the_token_count_is_known(seed):
    stream = one_token_answer_steps(180, tokens=16, accuracy=0.88, seed=seed)
    assert spikes(TrainingMonitor(warmup_steps=16, total_steps=180), stream) == []


def test_without_the_token_count_the_same_stream_looks_like_spikes():
    """What the finding saw: judged by the spread of the recent steps alone, chance looks like trouble."""
    found = [kind for seed in range(5) for kind, _ in spikes(
        TrainingMonitor(warmup_steps=16, total_steps=180),
        one_token_answer_steps(180, tokens=16, accuracy=0.88, seed=seed, with_counts=False))]
    assert {"loss_spike", "divergence"} & set(found)


def test_a_real_spike_among_few_tokens_is_still_caught():
    stream = one_token_answer_steps(80, tokens=16, accuracy=0.88, seed=0)
    stream[59] = {**stream[59], "loss": 8.0}  # the whole batch wrong by far more than one answer
    found = spikes(TrainingMonitor(warmup_steps=16, total_steps=80), stream)
    assert ("loss_spike", 60) in found


def test_sampling_noise_shrinks_like_one_over_sqrt_tokens():
    assert sampling_noise(1.0, 0, 6.0) == 0.0  # unknown count: no allowance
    few, many = sampling_noise(1.0, 16, 6.0), sampling_noise(1.0, 1600, 6.0)
    assert few > 0.6 and many == pytest.approx(math.sqrt(6.0 / 1600), rel=0.01)
    assert sampling_noise(0.0, 16, 6.0) == pytest.approx(6.0 / 16)  # near zero: one wrong token's worth


# ---------------------------------------------------------------- memory: warm-up is not a leak


def test_allocator_warm_up_is_not_memory_creep():
    """Memory that fills up over the first steps and levels off (the demo: 523 MB) is measured from after the warm-up."""
    rng = random.Random(0)
    monitor = TrainingMonitor(total_steps=120)
    stream = [{"step": s, "loss": 2.0, "grad_norm": 1.0, "memory_mb": 1500 + 700 * (1 - math.exp(-s / 12)) + rng.gauss(0, 1)}
              for s in range(1, 121)]
    assert [i for i in spikes(monitor, stream) if i[0] == "memory_creep"] == []
    assert monitor.memory_baseline > 2000  # the settled level, not the first reading


def test_a_leak_after_the_warm_up_is_still_creep():
    monitor = TrainingMonitor(total_steps=120)
    stream = [{"step": s, "loss": 2.0, "grad_norm": 1.0,
               "memory_mb": 1500 + 300 * (1 - math.exp(-s / 5)) + (30 * (s - 35) if s > 35 else 0)} for s in range(1, 121)]
    creep = [i for i in spikes(monitor, stream) if i[0] == "memory_creep"]
    assert creep and 35 < creep[0][1] < 70


def test_the_first_evaluation_takes_the_baseline_again():
    """An evaluation allocates its own batches once; growth is measured from the level after it."""
    settings = MonitorSettings(memory_growth_mb=100, memory_growth_ratio=0.05)
    monitor = TrainingMonitor(settings, total_steps=200)
    for s in range(1, 41):
        monitor.track_metrics({"step": s, "loss": 2.0, "grad_norm": 1.0, "memory_mb": 1000.0})
    monitor.track_metrics({"step": 40, "validation_loss": 2.0})
    # After the evaluation memory climbs to a new level over a few steps and stays there.
    found = []
    for s in range(41, 120):
        memory = 1000 + min(150.0, 10.0 * (s - 40))
        found += monitor.track_metrics({"step": s, "loss": 2.0, "grad_norm": 1.0, "memory_mb": memory})
    assert [i.kind for i in found] == []
    state = monitor.state_dict()
    again = TrainingMonitor(settings, total_steps=200)
    again.load_state_dict(state)
    assert again.memory_baseline == monitor.memory_baseline and again.memory_rebased


# ---------------------------------------------------------------- healthy runs of several shapes, on the tiny model

LABELS = ["blood", "grass", "user", "name"]  # one token each for the tiny tokenizer
SENTENCES = ["the color of the sky is blue and the sea is blue", "grass is green, a leaf is green, a frog is green",
             "blood is red, a rose is red, a cherry is red, a tomato is red",
             "user assistant system hello hi world the intent is billing"]
KINDS = ["apple", "stone", "river", "cloud"]

# name: (rows, long answers, batch size). All with 10 % of the answers random: a task a model cannot fully learn,
# so the steps stay noisy to the end, as real data does.
SHAPES = {
    "one_token_answers": (480, False, 8),
    "long_answers": (120, True, 8),
    "batch_1": (64, False, 1),
    "batch_32": (480, False, 32),
}


def healthy_rows(n: int, long: bool, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = rng.randrange(4)
        label = rng.randrange(4) if rng.random() < 0.1 else kind
        rows.append({"input": f"{KINDS[kind]} number {i}", "output": SENTENCES[label] if long else LABELS[label]})
    return rows


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_healthy_run_of_any_shape_raises_no_alarm(shape, tiny_model_dir, tmp_path: Path):
    n, long, batch_size = SHAPES[shape]
    data = write_jsonl(tmp_path / f"{shape}.jsonl", healthy_rows(n, long, seed=0))
    config = make_config({"data": str(data), "model": str(tiny_model_dir), "output": str(tmp_path / "run"),
                          "method": "full", "learning_rate": 3e-3, "batch_size": batch_size, "max_length": 128,
                          "evaluate_base": False, "test_split": 0.0, "saving_strategy": "no", "precision": "fp32",
                          # the monitor's thresholds were set on 3 full epochs: the auto defaults may train less
                          "epochs": 3, "early_stopping": False})
    result = FineTuningPipeline(config).train()
    assert result.status == "succeeded" and result.train["final_train_loss"] < 4.0  # it learned
    # throughput depends on the other processes of a shared machine: the one kind a healthy run may see here.
    assert [(i["kind"], i["step"], i["message"]) for i in result.issues if i["kind"] != "throughput_drop"] == []
