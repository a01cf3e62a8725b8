"""FineTuningPipeline end to end on the tiny model: the run directory, events, results, checkpoints, schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import make_rows, read_events, write_jsonl
from tuneforge.config import load_config, make_config
from tuneforge.core.errors import ConfigError, DatasetError, TrainingError
from tuneforge.data.manager import TrainingDataManager
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train.checkpoint import MANIFEST, list_checkpoints, verify_checkpoint

# The quick runs below skip the generation-based evaluation: nothing is held out for a test split.
QUICK = dict(evaluate_base=False, test_split=0.0, validation_split=0.0, saving_strategy="no", evaluation_strategy="no")


def steps_of(run_dir: Path) -> list[dict]:
    return [event for event in read_events(run_dir) if event["type"] == "train.step"]


def adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


# ---------------------------------------------------------------- the reference LoRA run


def test_run_directory_layout(lora_run, tiny_model_dir):
    run_dir = lora_run.run_dir
    assert lora_run.status == "succeeded"
    for name in ("config.yaml", "events.jsonl", "results.json", "predictions.jsonl", "report.html",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "model").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no staging leftovers
    config = load_config(run_dir / "config.yaml")  # re-runnable
    assert config.model == str(tiny_model_dir)
    assert config.method == "lora" and config.learning_rate == 1e-2 and config.epochs == 3


def test_events_stream(lora_run):
    events = read_events(lora_run.run_dir)
    assert [e["seq"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[0] == "run.started" and types[-1] == "run.finished"
    assert events[-1]["status"] == "succeeded"
    for kind in ("train.started", "train.step", "eval.result", "checkpoint.saved", "model.saved"):
        assert kind in types, kind
    started = next(e for e in events if e["type"] == "train.started")
    steps = steps_of(lora_run.run_dir)
    assert len(steps) == started["total_steps"] == lora_run.train["steps"]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    for step in steps:
        for key in ("loss", "accuracy", "perplexity", "learning_rate", "epoch", "tokens_per_second", "memory_mb"):
            assert isinstance(step[key], (int, float)), key
        assert step["perplexity"] == pytest.approx(math.exp(step["loss"]))
        assert 0.0 <= step["accuracy"] <= 1.0
        assert step["tokens_per_second"] > 0 and step["memory_mb"] > 0
        assert set(step["examples"]) >= {"processed", "total"}
    assert steps[-1]["examples"]["processed"] == steps[-1]["examples"]["total"] == 3 * lora_run.data["train"]
    assert [s["examples"]["processed"] for s in steps] == sorted(s["examples"]["processed"] for s in steps)
    assert steps[-1]["epoch"] == pytest.approx(3.0)
    evals = [e for e in events if e["type"] == "eval.result"]
    assert len(evals) == 3  # evaluation_strategy "epoch"
    for record in evals:
        assert record["validation_loss"] > 0 and 0.0 <= record["validation_accuracy"] <= 1.0
    assert lora_run.train["best_validation_loss"] == pytest.approx(min(e["validation_loss"] for e in evals))


def test_results_json(lora_run):
    results = json.loads((lora_run.run_dir / "results.json").read_text())
    assert results["status"] == "succeeded"
    assert results == json.loads(json.dumps(lora_run.to_dict()))
    assert {"base", "tuned", "train", "issues"} <= set(results)
    assert isinstance(results["issues"], list)
    assert results["task"] == "classification"
    for side in ("base", "tuned"):
        for key in ("accuracy", "f1_score", "loss", "perplexity"):
            assert isinstance(results[side][key], float), (side, key)
        assert results[side]["perplexity"] == pytest.approx(math.exp(results[side]["loss"]))
    train = results["train"]
    for key in ("train_seconds", "trained_tokens", "tokens_per_second", "peak_memory_mb", "steps", "epochs",
                "final_train_loss", "best_validation_loss", "compute_cost"):
        assert key in train, key
    assert train["steps"] == 21  # 28 train examples / batch 4 = 7 steps per epoch, 3 epochs
    assert train["epochs"] == 3
    assert train["train_seconds"] > 0 and train["tokens_per_second"] > 0 and train["peak_memory_mb"] > 0
    assert train["trained_tokens"] == 3 * results["data"]["trained_tokens_per_epoch"]
    assert train["final_train_loss"] == pytest.approx(steps_of(lora_run.run_dir)[-1]["loss"])
    assert train["compute_cost"] == 0.0
    assert results["data"]["train"] + results["data"]["validation"] + results["data"]["test"] == 40
    predictions = (lora_run.run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == results["data"]["test"]
    assert set(json.loads(predictions[0])) >= {"source", "input", "reference", "base", "tuned"}


def test_training_lowers_the_loss(lora_run):
    losses = [s["loss"] for s in steps_of(lora_run.run_dir)]
    first_epoch, last_epoch = losses[:7], losses[-7:]
    assert sum(last_epoch) / 7 < sum(first_epoch) / 7 - 0.1
    assert lora_run.tuned.performance["loss"] < lora_run.base.performance["loss"]


def test_adapter_loads_with_peft_and_reproduces_the_tuned_loss(lora_run, tiny_model_dir, session_dataset):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.evaluate.run import evaluate_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, lora_run.run_dir / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(lora_run.run_dir / "adapter")
    data = TrainingDataManager().prepare_data(session_dataset, validation_split=0.1, test_split=0.2, seed=42)
    assert [e.source for e in data.test] == [p["source"] for p in lora_run.tuned.predictions]
    scores = evaluate_model(model, tokenizer, data.test, metrics=("loss",))
    # The run evaluated in the precision it trained in; reloaded here in fp32. Equal in fp32, close in bf16.
    tolerance = 1e-5 if lora_run.model["precision"] == "fp32" else 2e-2
    assert scores.performance["loss"] == pytest.approx(lora_run.tuned.performance["loss"], rel=tolerance)


def test_checkpoints_every_epoch_are_complete(lora_run):
    checkpoints = list_checkpoints(lora_run.run_dir / "checkpoints")
    # Saved at the end of epochs 1 and 2 (the final weights go to adapter/), limit 2.
    assert [p.name for p in checkpoints] == ["step-000007", "step-000014"]
    for checkpoint in checkpoints:
        assert verify_checkpoint(checkpoint) == []
        assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == int(checkpoint.name[5:])


def test_report_html(lora_run, tmp_path):
    import shutil

    from tuneforge.report import build_report

    page = (lora_run.run_dir / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert "succeeded" in page and "<svg" in page and "f1_score" in page
    # A run still in progress (no results.json yet) can be reported too.
    running = tmp_path / "running"
    running.mkdir()
    shutil.copy(lora_run.run_dir / "events.jsonl", running / "events.jsonl")
    assert "running" in build_report(running)


# ---------------------------------------------------------------- quick runs


@pytest.fixture(scope="module")
def seeded_runs(train_run):
    """Two runs with the same seed (one checkpointing every 2 steps), and one with another seed."""
    first = train_run(**{**QUICK, "saving_strategy": "steps", "save_steps": 2, "save_total_limit": 2, "seed": 5})
    second = train_run(**{**QUICK, "seed": 5})
    other = train_run(**{**QUICK, "seed": 6})
    return first, second, other


def test_same_seed_gives_identical_adapter(seeded_runs):
    first, second, other = seeded_runs
    a, b, c = (adapter_tensors(run.run_dir) for run in seeded_runs)
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert [s["loss"] for s in steps_of(first.run_dir)] == [s["loss"] for s in steps_of(second.run_dir)]
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_step_checkpoints_manifest_and_pruning(seeded_runs):
    run_dir = seeded_runs[0].run_dir
    total = seeded_runs[0].train["steps"]
    assert total == 30  # 40 examples / batch 4, 3 epochs
    saved = [e["step"] for e in read_events(run_dir) if e["type"] == "checkpoint.saved"]
    assert saved == list(range(2, total, 2))
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == [f"step-{total - 4:06d}", f"step-{total - 2:06d}"]  # save_total_limit=2 pruned the rest
    checkpoint = run_dir / "checkpoints" / names[-1]
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    assert manifest["step"] == total - 2
    assert {"optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json", "weights/adapter_model.safetensors"} <= set(manifest["files"])
    assert verify_checkpoint(checkpoint) == []
    # The checkpointed weights are a loadable PEFT adapter.
    assert (checkpoint / "weights" / "adapter_config.json").is_file()


def test_verify_checkpoint_detects_corruption(seeded_runs, tmp_path):
    import shutil

    source = list_checkpoints(seeded_runs[0].run_dir / "checkpoints")[-1]
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    assert verify_checkpoint(copy) == []
    weights = copy / "weights" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    problems = verify_checkpoint(copy)
    assert len(problems) == 1 and str(weights) in problems[0]
    (copy / "optimizer.pt").unlink()
    assert any("optimizer.pt" in p and "missing" in p for p in verify_checkpoint(copy))
    (copy / MANIFEST).write_text("{not json")
    assert verify_checkpoint(copy) and "manifest" in verify_checkpoint(copy)[0]


def test_full_fine_tuning_writes_a_loadable_model(train_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    result = train_run(**{**QUICK, "method": "full", "epochs": 1, "learning_rate": 1e-3})
    model_dir = result.run_dir / "model"
    assert (model_dir / "config.json").is_file()
    assert list(model_dir.glob("*.safetensors"))
    assert not (result.run_dir / "adapter").exists()
    tuned = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tuned_state, base_state = tuned.state_dict(), base.state_dict()
    assert tuned_state.keys() == base_state.keys()
    changed = [k for k in base_state if not torch.equal(base_state[k], tuned_state[k])]
    assert len(changed) > len(base_state) // 2  # every kind of weight was trained
    assert result.model["trainable_parameters"] == result.model["total_parameters"]
    assert result.train["learning_rate"] == 1e-3

    from tuneforge.runs import load_trained

    loaded, tokenizer, description = load_trained(result.run_dir, device="cpu")
    assert "fully fine-tuned" in description
    assert torch.equal(loaded.get_input_embeddings().weight, tuned.get_input_embeddings().weight)


def test_learning_rate_warms_up_then_decays(train_run):
    result = train_run(**{**QUICK, "epochs": 2, "warmup_steps": 4, "learning_rate": 1e-2})
    started = next(e for e in read_events(result.run_dir) if e["type"] == "train.started")
    assert started["warmup_steps"] == 4
    rates = [s["learning_rate"] for s in steps_of(result.run_dir)]
    assert len(rates) == 20
    peak = rates.index(max(rates))
    assert peak == 4 and max(rates) == pytest.approx(1e-2)
    assert all(a < b for a, b in zip(rates[: peak], rates[1 : peak + 1]))  # warm-up: rising
    assert all(a > b for a, b in zip(rates[peak:], rates[peak + 1 :]))  # cosine: falling
    assert rates[-1] < 0.05 * max(rates)


def test_default_warmup_is_ten_percent(train_run):
    result = train_run(**{**QUICK, "epochs": 2, "lr_scheduler": "linear"})
    started = next(e for e in read_events(result.run_dir) if e["type"] == "train.started")
    assert started["total_steps"] == 20 and started["warmup_steps"] == 2
    rates = [s["learning_rate"] for s in steps_of(result.run_dir)]
    assert rates.index(max(rates)) == 2
    # Linear decay: equal decrements after the peak.
    drops = [a - b for a, b in zip(rates[2:], rates[3:])]
    assert max(drops) == pytest.approx(min(drops), rel=1e-6)


def test_gradient_accumulation_step_count(train_run):
    # 40 examples, batch 4 -> 10 batches; accumulating 3 -> ceil(10/3) = 4 optimizer steps per epoch.
    result = train_run(**{**QUICK, "epochs": 2, "gradient_accumulation_steps": 3})
    events = read_events(result.run_dir)
    started = next(e for e in events if e["type"] == "train.started")
    assert started["steps_per_epoch"] == 4 and started["total_steps"] == 8
    steps = steps_of(result.run_dir)
    assert len(steps) == 8 and result.train["steps"] == 8
    processed = [s["examples"]["processed"] for s in steps]
    assert processed[:4] == [12, 24, 36, 40]  # three batches of 4 per step; the last step has one batch
    assert processed[-1] == steps[-1]["examples"]["total"] == 80


def test_accumulation_weighs_every_token_equally(tiny_model_dir, tmp_path, monkeypatch):
    """batch 2 x 2 accumulated micro-batches make the same update as one batch of 4 (token-level averaging)."""
    from tuneforge.data.examples import TrainingData, TrainingExample
    from tuneforge.train import loop

    def in_order(lengths, batch_size, seed, epoch):
        return [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]

    monkeypatch.setattr(loop, "epoch_batches", in_order)
    # Answers of very different lengths, so the two micro-batches hold different numbers of labelled tokens.
    answers = ["red", "blue", "green grass is green and a leaf is green too", "a", "the sky is blue", "rose",
               "cherry and tomato and blood are red", "lime"]
    data = TrainingData(examples=[TrainingExample.from_pair(f"question {i}?", a) for i, a in enumerate(answers)])
    tensors = []
    for name, batch_size, accumulation in (("one", 4, 1), ("accumulated", 2, 2)):
        config = make_config({"model": str(tiny_model_dir), "output": str(tmp_path / name), "epochs": 1, "seed": 3,
                              "batch_size": batch_size, "gradient_accumulation_steps": accumulation, "warmup_steps": 0,
                              "learning_rate": 1e-2, "lr_scheduler": "constant", "precision": "fp32", **QUICK})
        result = FineTuningPipeline(config).train(data)
        assert result.train["steps"] == 2
        tensors.append(adapter_tensors(result.run_dir))
    one, accumulated = tensors
    assert one.keys() == accumulated.keys()
    for key in one:
        # Float noise from different padding is ~1e-6; per-micro-batch averaging would differ by ~1e-2.
        assert torch.allclose(one[key], accumulated[key], atol=1e-4), (key, float((one[key] - accumulated[key]).abs().max()))


def test_max_steps_and_eval_steps(train_run):
    result = train_run(**{**QUICK, "validation_split": 0.2, "evaluation_strategy": "steps", "eval_steps": 3, "max_steps": 7})
    events = read_events(result.run_dir)
    assert result.train["steps"] == 7 and len(steps_of(result.run_dir)) == 7
    assert [e["step"] for e in events if e["type"] == "eval.result"] == [3, 6, 7]


def test_pipeline_accepts_training_data(tiny_model_dir, tmp_path):
    data = TrainingDataManager().prepare_data(make_rows(20), validation_split=0.0, test_split=0.0)
    config = make_config({"model": str(tiny_model_dir), "output": str(tmp_path / "run"), "epochs": 1, "batch_size": 4, **QUICK})
    result = FineTuningPipeline(config).train(data)
    assert result.status == "succeeded"
    assert result.train["steps"] == 5
    assert result.data["source"] == "memory"


# ---------------------------------------------------------------- failures


def test_existing_output_is_refused_before_anything_is_written(tiny_model_dir, session_dataset, tmp_path):
    output = tmp_path / "taken"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    config = make_config({"data": str(session_dataset), "model": str(tiny_model_dir), "output": str(output), **QUICK})
    with pytest.raises(ConfigError) as caught:
        FineTuningPipeline(config).train()
    assert str(output) in str(caught.value)
    assert sorted(p.name for p in output.iterdir()) == ["keep.txt"]


def test_bad_data_creates_no_run_directory(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"input": "a"}])
    output = tmp_path / "run"
    config = make_config({"data": str(data), "model": str(tiny_model_dir), "output": str(output), **QUICK})
    with pytest.raises(DatasetError):
        FineTuningPipeline(config).train()
    assert not output.exists()
    with pytest.raises(ConfigError):
        FineTuningPipeline(make_config({"model": str(tiny_model_dir), "output": str(output)})).train()
    assert not output.exists()


def test_data_with_nothing_to_train_creates_no_run_directory(tiny_model_dir, tmp_path):
    rows = [{"input": "what color is the sky on a clear summer day in the morning? " * 3, "output": "blue"}] * 4
    data = write_jsonl(tmp_path / "long.jsonl", [dict(r, input=f"{i} {r['input']}") for i, r in enumerate(rows)])
    output = tmp_path / "run"
    config = make_config({"data": str(data), "model": str(tiny_model_dir), "output": str(output), "max_length": 16, **QUICK})
    with pytest.raises(DatasetError):
        FineTuningPipeline(config).train()
    assert not output.exists()


@pytest.fixture
def nan_after_two_steps(monkeypatch):
    from tuneforge.train import accumulation

    real = accumulation.training_loss_sums
    calls = {"n": 0}

    def poisoned(*args):
        sums = real(*args)
        calls["n"] += 1
        if calls["n"] > 2:
            sums.loss_sum = sums.loss_sum * float("nan")
        return sums

    monkeypatch.setattr(accumulation, "training_loss_sums", poisoned)


def test_nan_loss_results_and_events(train_run, nan_after_two_steps, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError) as caught:
        train_run(**QUICK, output=str(run_dir))
    assert "step 3" in str(caught.value) and "--learning-rate" in str(caught.value)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "step 3" in results["error"]
    events = read_events(run_dir)
    issues = [e for e in events if e["type"] == "issue.detected"]
    assert len(issues) == 1 and issues[0]["kind"] == "nan_loss" and issues[0]["step"] == 3
    assert events[-1]["type"] == "run.finished" and events[-1]["status"] == "failed"


def test_nan_loss_issue_in_results_json(train_run, nan_after_two_steps, tmp_path):
    with pytest.raises(TrainingError):
        train_run(**QUICK, output=str(tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [issue["kind"] for issue in results["issues"]] == ["nan_loss"]
