"""Exact resume after SIGKILL: a run killed at random steps (or in the middle of writing a checkpoint) and
resumed ends with the same adapter as an uninterrupted run (max |Δw| ≤ 1e-6; on CPU it is 0.0) and the
same loss curve.

The killed runs are real processes: a small script calls the library on the tiny model and SIGKILLs
itself from inside training (after a given step, or after writing some files of a checkpoint). The
kill steps are drawn at random; the seed is printed (set TUNEFORGE_KILL_SEED to replay one).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from helpers import read_events
from tuneforge.config import make_config
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.report import latest_by_step
from tuneforge.train.checkpoint import list_checkpoints, verify_checkpoint

# Dropout on (the RNG matters), accumulation 2 with an odd number of batches (partial groups), checkpoints
# every 3 steps (kills land mid-epoch and between checkpoints), validation every 4 steps (best tracking).
KILL_CONFIG = dict(epochs=3, batch_size=4, max_length=128, max_new_tokens=8, evaluate_base=False, test_split=0.0,
                   validation_split=0.1, gradient_accumulation_steps=2, lora_dropout=0.1, learning_rate=5e-3,
                   saving_strategy="steps", save_steps=3, save_total_limit=2, evaluation_strategy="steps", eval_steps=4,
                   seed=11, final_weights="last")
TOTAL_STEPS = 15  # 36 training rows / batch 4 = 9 batches -> 5 steps per epoch, 3 epochs

CHILD = r"""
import json, os, signal, sys
spec = json.loads(sys.argv[1])
from tuneforge.config import make_config
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train import checkpoint

def die():
    os.kill(os.getpid(), signal.SIGKILL)

kill_step = spec.get("kill_at_step")
def on_event(event):
    if kill_step is not None and event.get("type") == "train.step" and event.get("step") == kill_step:
        die()

write = spec.get("kill_in_checkpoint")  # [step, files to write before dying]
if write:
    real_save, written = checkpoint.torch.save, {"n": 0}
    def save(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if os.path.basename(os.path.dirname(path)).startswith(".step-%06d." % write[0]):
            written["n"] += 1
            if written["n"] >= write[1]:
                die()
    checkpoint.torch.save = save

FineTuningPipeline(make_config(spec["config"]), on_event=on_event).train()
print("finished without being killed")
"""


def kill_seed() -> int:
    return int(os.environ.get("TUNEFORGE_KILL_SEED") or time.time_ns() % 1_000_000)


def run_child(spec: dict[str, Any], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def config_values(data: Path, model: Path, output: Path, **extra: Any) -> dict[str, Any]:
    return {"data": str(data), "model": str(model), "output": str(output), **KILL_CONFIG, **extra}


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[key] - b[key]).abs().max()) for key in a)


def loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in latest_by_step([e for e in read_events(run_dir) if e["type"] == "train.step"])]


def uninterrupted_run(tmp_path_factory: pytest.TempPathFactory, model: Path, data: Path) -> Path:
    """The uninterrupted run of ``KILL_CONFIG`` every resumed run must reproduce (made once per session)."""
    output = tmp_path_factory.getbasetemp() / "kill-reference"
    if not (output / "results.json").is_file():
        result = FineTuningPipeline(make_config(config_values(data, model, output))).train()
        assert result.train["steps"] == TOTAL_STEPS
    return output


@pytest.fixture
def reference(tiny_model_dir, session_dataset, tmp_path_factory) -> Path:
    return uninterrupted_run(tmp_path_factory, tiny_model_dir, session_dataset)


def resume_in_process(run_dir: Path, values: dict[str, Any]):
    return FineTuningPipeline(make_config({**values, "resume": True})).train()


def assert_same_as_reference(run_dir: Path, reference: Path, note: str) -> float:
    difference = max_difference(adapter(reference), adapter(run_dir))
    assert difference <= 1e-6, f"{note}: max |Δw| = {difference}"
    resumed, uninterrupted = loss_curve(run_dir), loss_curve(reference)
    assert [s for s, _ in resumed] == [s for s, _ in uninterrupted] == list(range(1, TOTAL_STEPS + 1)), note
    assert max(abs(a - b) for (_, a), (_, b) in zip(resumed, uninterrupted)) <= 1e-6, note
    return difference


def test_two_sigkills_at_random_steps_then_resume_is_exact(reference, tiny_model_dir, session_dataset, tmp_path):
    """Kill at a random step, resume, kill the resumed run at a later random step, resume again: same weights."""
    seed = kill_seed()
    rng = random.Random(seed)
    first = rng.randint(1, TOTAL_STEPS - 4)
    second = rng.randint(first + 1, TOTAL_STEPS - 1)
    note = f"TUNEFORGE_KILL_SEED={seed}: kills after steps {first} and {second}"
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)

    killed = run_child({"config": values, "kill_at_step": first})
    assert killed.returncode == -signal.SIGKILL, (note, killed.stdout, killed.stderr[-2000:])
    killed = run_child({"config": {**values, "resume": True}, "kill_at_step": second})
    assert killed.returncode == -signal.SIGKILL, (note, killed.stdout, killed.stderr[-2000:])
    assert not (run_dir / "adapter").exists()

    result = resume_in_process(run_dir, values)
    assert result.status == "succeeded", note
    resumed_at = [e["step"] for e in read_events(run_dir) if e["type"] == "train.resumed"]
    # The newest checkpoint before each kill (the kill comes as step k is logged, before its own checkpoint).
    assert resumed_at == [(first - 1) // 3 * 3, (second - 1) // 3 * 3], note
    assert_same_as_reference(run_dir, reference, note)
    print(f"{note}: resumed equal")


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(reference, tiny_model_dir, session_dataset, tmp_path):
    """Killed after writing some files of checkpoint 9: the partial directory is never used, 6 is resumed from."""
    seed = kill_seed()
    files = random.Random(seed).randint(1, 3)  # optimizer.pt, scheduler.pt, rng.pt: die after this many
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)
    killed = run_child({"config": values, "kill_in_checkpoint": [9, files]})
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr[-2000:])
    checkpoints = run_dir / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step-000003", "step-000006"]
    staging = [p for p in checkpoints.iterdir() if p.name.startswith(".step-000009.")]
    assert len(staging) == 1 and not (staging[0] / "manifest.json").exists()
    intact = {p.name: (p / "manifest.json").read_text() for p in list_checkpoints(checkpoints)}
    assert all(verify_checkpoint(p) == [] for p in list_checkpoints(checkpoints))

    result = resume_in_process(run_dir, values)
    assert result.status == "succeeded"
    events = read_events(run_dir)
    assert [e["step"] for e in events if e["type"] == "train.resumed"] == [6]
    assert any(e["type"] == "checkpoint.cleaned" for e in events)
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # the partial one was removed
    assert intact  # the checkpoints that existed were intact before the resume
    assert_same_as_reference(run_dir, reference, f"killed after {files} file(s) of checkpoint 9")


def test_full_fine_tuning_resumes_exactly(tiny_model_dir, session_dataset, tmp_path):
    """Full fine-tuning (every weight, tied embeddings) crashed after step 8 and resumed: the same model."""

    class Crash(Exception):
        pass

    def crash(event):
        if event.get("type") == "train.step" and event["step"] == 8:
            raise Crash()

    extra = dict(method="full", learning_rate=1e-3, epochs=2, lora_dropout=0.0)  # lora_dropout is a LoRA option: back to its default
    whole = FineTuningPipeline(make_config(config_values(session_dataset, tiny_model_dir, tmp_path / "whole", **extra))).train()
    values = config_values(session_dataset, tiny_model_dir, tmp_path / "resumed", **extra)
    with pytest.raises(Crash):
        FineTuningPipeline(make_config(values), on_event=crash).train()
    resumed = resume_in_process(tmp_path / "resumed", values)
    assert resumed.train["resumed_from_step"] == 6 and resumed.train["steps"] == whole.train["steps"] == 10
    a = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert max_difference(a, b) == 0.0


@pytest.mark.slow  # about 4 minutes: ten killed processes and ten resumes through the CLI
def test_ten_random_sigkills_resume_exactly_through_the_cli(reference, tiny_model_dir, session_dataset, tmp_path):
    """Ten runs, each SIGKILLed from outside at a random moment, resumed with `tuneforge resume`: all equal."""
    seed = kill_seed()
    rng = random.Random(seed)
    tuneforge = Path(sys.executable).parent / "tuneforge"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    figures = []
    for trial in range(10):
        run_dir = tmp_path / f"run-{trial}"
        values = config_values(session_dataset, tiny_model_dir, run_dir)
        target = rng.randint(1, TOTAL_STEPS - 1)
        process = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps({"config": values})], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None:  # kill from outside once step `target` is logged: a random point in a step
            steps = [e["step"] for e in read_events(run_dir) if e["type"] == "train.step"] if (run_dir / "events.jsonl").exists() else []
            if steps and steps[-1] >= target:
                time.sleep(rng.random() * 0.05)
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        process.wait()
        killed_at = max([e["step"] for e in read_events(run_dir) if e["type"] == "train.step"], default=0)
        resumed = subprocess.run([str(tuneforge), "resume", str(run_dir), "--json"], capture_output=True, text=True,
                                 env=env, timeout=240)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        difference = assert_same_as_reference(run_dir, reference, f"seed {seed} trial {trial} kill near step {killed_at}")
        figures.append({"trial": trial, "killed_after_step": killed_at, "max_abs_weight_difference": difference})
    print(json.dumps({"seed": seed, "kills": len(figures), "resumed_equal": len(figures),
                      "largest_weight_difference": max(f["max_abs_weight_difference"] for f in figures), "trials": figures}))
