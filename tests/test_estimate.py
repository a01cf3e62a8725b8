"""The training-time estimate: measured on training's own code path, leaves the model untouched, counts right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import read_events
from tuneforge.config import make_config
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import encode_examples
from tuneforge.model.methods import get_method, make_trainable
from tuneforge.train import estimate as estimate_module
from tuneforge.train.estimate import estimate_training, evaluations_planned, measure_training_speed


def _lora_model(tiny_model_dir: Path, **fields):
    config = make_config({"model": str(tiny_model_dir), "batch_size": 4, "precision": "fp32", **fields})
    method = get_method(config.method)
    torch.manual_seed(0)
    return make_trainable(method, method.load_base(tiny_model_dir, "cpu", config, "fp32"), config), config


def _items(tokenizer, n: int = 12):
    examples = [TrainingExample(input=f"what color is thing {i}?", output=["red", "green", "blue"][i % 3]) for i in range(n)]
    return encode_examples(tokenizer, examples, 128)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_measuring_leaves_weights_gradients_and_random_state_as_they_were(tiny_model_dir, tiny_tokenizer, method):
    model, config = _lora_model(tiny_model_dir, method=method, learning_rate=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.eval()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    sample = measure_training_speed(model, _items(tiny_tokenizer).items, config, tiny_tokenizer.pad_token_id, steps=2)
    assert sample.tokens_per_second and sample.tokens_per_second > 0 and sample.steps == 2 and sample.tokens > 0
    assert torch.equal(torch.rand(3), expected_draw)  # the generators were restored
    assert not model.training
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]), name
        assert parameter.grad is None


def test_measurement_runs_the_loops_own_step(tiny_model_dir, tiny_tokenizer, monkeypatch):
    """The estimate goes through train.accumulation.accumulate_gradients: what training runs, packing and all."""
    calls = []
    real = estimate_module.accumulate_gradients

    def spy(model, group, config, *args):
        calls.append((len(group), config.packing, config.micro_batch_tokens))
        return real(model, group, config, *args)

    monkeypatch.setattr(estimate_module, "accumulate_gradients", spy)
    model, config = _lora_model(tiny_model_dir, gradient_accumulation_steps=2, micro_batch_tokens=64)
    measure_training_speed(model, _items(tiny_tokenizer).items, config, tiny_tokenizer.pad_token_id, steps=3)
    assert calls == [(2, True, 64)] * 4  # one warm-up + three timed steps, each a whole accumulation group


def test_a_run_with_the_estimate_trains_exactly_like_one_without(train_run):
    import safetensors.torch

    with_estimate = train_run(estimate_steps=2, evaluate_base=False, test_split=0.0, learning_rate=1e-2)
    without = train_run(estimate_steps=0, evaluate_base=False, test_split=0.0, learning_rate=1e-2)
    a = safetensors.torch.load_file(with_estimate.run_dir / "adapter" / "adapter_model.safetensors")
    b = safetensors.torch.load_file(without.run_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert "estimate" in with_estimate.train and "estimate" not in without.train
    assert not [e for e in read_events(without.run_dir) if e["type"] == "train.estimate"]


def test_the_estimate_counts_the_steps_tokens_and_evaluations_the_run_then_has(train_run):
    result = train_run(estimate_steps=1, evaluate_base=False, test_split=0.0, cost_per_hour=3.6,
                       evaluation_strategy="steps", eval_steps=4)
    estimate = result.train["estimate"]
    events = read_events(result.run_dir)
    announced = [e for e in events if e["type"] == "train.estimate"]
    assert len(announced) == 1 and "estimated training time" in announced[0]["message"]
    first_step = next(i for i, e in enumerate(events) if e["type"] == "train.step")
    assert events.index(next(e for e in events if e["type"] == "train.estimate")) < first_step  # announced before training
    assert estimate["optimizer_steps"] == result.train["steps"]
    assert estimate["tokens"] == result.train["processed_tokens"]
    assert estimate["trained_tokens"] == result.train["trained_tokens"]
    assert estimate["evaluations"] == len([e for e in events if e["type"] == "eval.result"])
    assert estimate["seconds"] == pytest.approx(estimate["step_seconds"] + estimate["eval_seconds"], abs=0.11)
    assert estimate["cost"] == pytest.approx(estimate["seconds"] / 3600 * 3.6, abs=1e-3)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["train"]["estimate"] == estimate


def test_resume_does_not_measure_again(tiny_model_dir, session_dataset, tmp_path):
    from helpers import FAST
    from tuneforge.pipeline import FineTuningPipeline

    values = {"data": str(session_dataset), "model": str(tiny_model_dir), **FAST, "estimate_steps": 1, "evaluate_base": False,
              "test_split": 0.0, "output": str(tmp_path / "run")}
    pipeline: FineTuningPipeline | None = None

    def stop_at_step_two(event: dict) -> None:
        if event.get("type") == "train.step" and event["step"] == 2:
            pipeline.request_stop("test")

    pipeline = FineTuningPipeline(make_config(values), on_event=stop_at_step_two, handle_signals=False)
    assert pipeline.train().status == "interrupted"
    resumed = FineTuningPipeline(make_config({**values, "resume": True}), handle_signals=False).train()
    assert resumed.status == "succeeded"
    assert len([e for e in read_events(tmp_path / "run") if e["type"] == "train.estimate"]) == 1


@pytest.mark.parametrize(("strategy", "every", "total", "per_epoch", "expected"),
                         [("epoch", 50, 9, 3, 3), ("epoch", 50, 10, 3, 4), ("steps", 4, 10, 3, 3), ("steps", 5, 10, 3, 2),
                          ("no", 5, 10, 3, 0)])
def test_evaluations_planned_follows_the_schedule(strategy, every, total, per_epoch, expected):
    config = make_config({"evaluation_strategy": strategy, "eval_steps": every})
    assert evaluations_planned(config, total, per_epoch) == expected


def test_estimate_without_measured_speed_is_none(tiny_model_dir, tiny_tokenizer):
    from tuneforge.train.estimate import SpeedSample

    model, config = _lora_model(tiny_model_dir)
    encoded = _items(tiny_tokenizer)
    result = estimate_training(model, encoded, None, config, tiny_tokenizer.pad_token_id,
                               measure=lambda *a, **k: SpeedSample(None, 0, 0.0, 0))
    assert result.seconds is None and result.cost is None and result.tokens > 0
