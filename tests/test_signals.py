"""SIGINT / SIGTERM: the current step is finished, a checkpoint written, the run ends "interrupted" (CLI exit 75)
with the command that resumes it; resuming gives the uninterrupted result. A second signal stops at once and
leaves the previous checkpoint in use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import read_events
from test_resume_kill import TOTAL_STEPS, assert_same_as_reference, config_values, uninterrupted_run
from tuneforge.cli.main import EXIT_STOPPED_BY_SIGNAL, main
from tuneforge.config import make_config
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train import checkpoint
from tuneforge.train.checkpoint import list_checkpoints, verify_checkpoint


@pytest.fixture
def reference(tiny_model_dir, session_dataset, tmp_path_factory) -> Path:
    return uninterrupted_run(tmp_path_factory, tiny_model_dir, session_dataset)


def signal_at_step(step: int, signum: int):
    def on_event(event):
        if event.get("type") == "train.step" and event.get("step") == step:
            os.kill(os.getpid(), signum)  # delivered to the handler at once, in the middle of the pipeline

    return on_event


@pytest.mark.parametrize("signum, step", [(signal.SIGTERM, 4), (signal.SIGINT, 7)])
def test_signal_finishes_the_step_saves_a_checkpoint_and_resume_is_exact(
    reference, tiny_model_dir, session_dataset, tmp_path, signum, step
):
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)
    before = signal.getsignal(signal.SIGINT)
    result = FineTuningPipeline(make_config(values), on_event=signal_at_step(step, signum)).train()
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are put back
    name = signal.Signals(signum).name
    assert result.status == "interrupted"
    assert result.train["interrupted"] == name and result.train["steps"] == step  # no step lost, none half-done
    assert result.train["checkpoint"] == f"checkpoints/step-{step:06d}"
    assert f"tuneforge resume {run_dir}" in result.error
    assert verify_checkpoint(run_dir / result.train["checkpoint"]) == []
    assert not (run_dir / "adapter").exists()
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["status"] == "interrupted"
    events = read_events(run_dir)
    stopped = [e for e in events if e["type"] == "train.interrupted"]
    assert stopped == [{**stopped[0], "step": step, "signal": name, "checkpoint": result.train["checkpoint"]}]
    assert events[-1]["type"] == "run.finished" and events[-1]["status"] == "interrupted"

    resumed = FineTuningPipeline(make_config({**values, "resume": True})).train()
    assert resumed.status == "succeeded" and resumed.train["resumed_from_step"] == step
    assert_same_as_reference(run_dir, reference, f"{name} after step {step}")


def test_second_signal_stops_at_once_during_the_checkpoint_and_keeps_the_previous_one(
    reference, tiny_model_dir, session_dataset, tmp_path, monkeypatch
):
    """SIGTERM after step 8; while its checkpoint is being written, SIGINT: the write is abandoned, step 6 stays."""
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)
    real_save = checkpoint.torch.save

    def save(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if ".step-000008." in str(path):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        FineTuningPipeline(make_config(values), on_event=signal_at_step(8, signal.SIGTERM)).train()
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    checkpoints = run_dir / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step-000003", "step-000006"]
    assert all(verify_checkpoint(p) == [] for p in list_checkpoints(checkpoints))
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # the half-written one is gone
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["status"] == "cancelled" and "SIGINT" in saved["error"]

    resumed = FineTuningPipeline(make_config({**values, "resume": True})).train()
    assert resumed.train["resumed_from_step"] == 6
    assert_same_as_reference(run_dir, reference, "second signal during the checkpoint of step 8")


def test_signal_outside_training_stops_at_once(tiny_model_dir, session_dataset, tmp_path):
    """During the base-model evaluation (before training) there is no step to finish: SIGTERM stops at once."""
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir, evaluate_base=True, test_split=0.1)

    def on_event(event):
        if event.get("type") == "eval.started":
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        FineTuningPipeline(make_config(values), on_event=on_event).train()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "cancelled"


def test_cli_sigterm_exits_75_with_the_resume_command_then_resume_finishes(capsys, tiny_model_dir, session_dataset, tmp_path):
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)
    args = ["finetune", "--data", str(session_dataset), "--model", str(tiny_model_dir), "--output", str(run_dir)]
    for key in ("epochs", "batch_size", "max_length", "validation_split", "test_split", "gradient_accumulation_steps",
                "lora_dropout", "learning_rate", "saving_strategy", "save_steps", "evaluation_strategy", "eval_steps", "seed"):
        args += ["--" + key.replace("_", "-"), str(values[key])]
    args += ["--no-evaluate-base", "--logging-steps", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    tuneforge = Path(sys.executable).parent / "tuneforge"
    process = subprocess.Popen([str(tuneforge), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "events.jsonl").exists() and any(e["type"] == "train.step" for e in read_events(run_dir)):
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_STOPPED_BY_SIGNAL == 75, err[-3000:]
    assert "Traceback" not in err
    assert f"tuneforge resume {run_dir}" in err and "SIGTERM" in err
    results = json.loads((run_dir / "results.json").read_text())
    stopped_at = results["train"]["steps"]
    assert results["status"] == "interrupted" and 1 <= stopped_at < TOTAL_STEPS

    code = main(["resume", str(run_dir), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    resumed = json.loads(captured.out)
    assert resumed["status"] == "succeeded" and resumed["train"]["resumed_from_step"] == stopped_at
    assert resumed["train"]["steps"] == TOTAL_STEPS
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("argv, expected", [
    (["--help"], ["75 stopped by Ctrl-C/SIGTERM", "130", "tuneforge resume", "tuneforge monitor"]),
    (["finetune", "--help"], ["--resume", "--early-stopping", "--on-issue", "--final-weights", "--report-to", "75 stopped"]),
    (["resume", "--help"], ["RUN_DIR", "uninterrupted run", "75 stopped"]),
    (["monitor", "--help"], ["RUN_DIR", "--no-follow", "--json"]),
])
def test_help_documents_resume_monitor_and_the_exit_codes(capsys, monkeypatch, argv, expected):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, text
