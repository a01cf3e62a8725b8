"""report.html, `tuneforge report`, `tuneforge monitor` and TensorBoard logs, on a run that was interrupted,
resumed and had an issue."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import read_events
from tuneforge.cli.main import main
from tuneforge.config import make_config
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.report import build_report, latest_by_step
from tuneforge.train import accumulation

MONITORED = dict(epochs=3, batch_size=4, max_length=128, max_new_tokens=4, validation_split=0.15, test_split=0.15,
                 evaluation_strategy="steps", eval_steps=4, saving_strategy="steps", save_steps=3, learning_rate=5e-3,
                 lr_scheduler="constant", warmup_steps=0, report_to=["tensorboard"], precision="fp32")


class Crash(Exception):
    pass


def monitored_run_dir(tmp_path_factory: pytest.TempPathFactory, model: Path, data: Path) -> Path:
    """A run that crashed after step 9, was resumed (from the best checkpoint, step 8), and met a loss spike at
    step 14 (made once per session)."""
    run_dir = tmp_path_factory.getbasetemp() / "monitored-run"
    if (run_dir / "results.json").is_file() and json.loads((run_dir / "results.json").read_text())["status"] == "succeeded":
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    values = {"data": str(data), "model": str(model), "output": str(run_dir), **MONITORED}

    def crash(event):
        if event.get("type") == "train.step" and event["step"] == 9:
            raise Crash()

    with pytest.raises(Crash):
        FineTuningPipeline(make_config(values), on_event=crash).train()
    real, done = accumulation.training_loss_sums, {"step": 0}

    def spiky(*args):
        sums = real(*args)
        if done["step"] + 1 == 14:
            sums.loss_sum = sums.loss_sum + 29 * sums.loss_sum.detach()
        return sums

    def track(event):
        if event.get("type") == "train.step":
            done["step"] = event["step"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accumulation, "training_loss_sums", spiky)
        result = FineTuningPipeline(make_config({**values, "resume": True}), on_event=track).train()
    assert result.status == "succeeded"
    return run_dir


@pytest.fixture
def monitored_run(tmp_path_factory, tiny_model_dir, session_dataset) -> Path:
    return monitored_run_dir(tmp_path_factory, tiny_model_dir, session_dataset)


def test_report_has_curves_issues_timeline_config_data_and_comparison(monitored_run):
    page = (monitored_run / "report.html").read_text()  # written at the end of the run
    assert page.startswith("<!doctype html>") and "succeeded" in page
    for title in ("loss", "learning rate", "gradient norm (before clipping)", "throughput (tokens/s)", "memory (MB)"):
        assert f'aria-label="{title}"' in page, title
    assert "loss_spike" in page and "jumped" in page  # the issues table
    assert "resumed from step 8" in page and "resuming from step-000008" in page  # a marker and a timeline row
    assert re.search(r'class="marker"[^>]*stroke="#d97706"', page)  # the warning at step 14, on the step axis
    assert "base" in page and "tuned" in page and "f1_score" in page
    assert "learning_rate: 0.005" in page  # the config
    assert "trained_tokens_per_epoch" in page  # the data summary
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def test_curves_take_the_last_value_of_each_step(monitored_run):
    """After a resume the re-done steps replace the first attempt's in the curves: one point per step."""
    steps = [e for e in read_events(monitored_run) if e["type"] == "train.step"]
    assert len(steps) > len({e["step"] for e in steps})  # step 9 was trained twice
    curve = latest_by_step(steps)
    assert [e["step"] for e in curve] == list(range(1, curve[-1]["step"] + 1))
    assert all(point["seq"] == max(e["seq"] for e in steps if e["step"] == point["step"]) for point in curve)


def test_results_json_keeps_issues_across_the_resume(monitored_run):
    results = json.loads((monitored_run / "results.json").read_text())
    assert [(i["kind"], i["step"]) for i in results["issues"] if i["kind"] != "throughput_drop"] == [("loss_spike", 14)]
    assert results["train"]["resumed_from_step"] == 8
    assert set(results["issues"][0]) >= {"kind", "severity", "step", "message", "suggestion", "action", "evidence"}


def test_report_of_a_run_in_progress(monitored_run, tmp_path):
    running = tmp_path / "running"
    running.mkdir()
    shutil.copy(monitored_run / "events.jsonl", running / "events.jsonl")
    page = build_report(running)
    assert "running" in page and "<svg" in page


def test_report_command(capsys, monitored_run, tmp_path):
    assert main(["report", str(monitored_run)]) == 0
    assert capsys.readouterr().out.strip() == str(monitored_run / "report.html")
    assert main(["report", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err


def test_tensorboard_logs(monitored_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(monitored_run / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "eval/loss", "system/memory_mb"} <= tags
    steps = [event.step for event in accumulator.Scalars("train/loss")]
    assert set(steps) == set(range(1, max(steps) + 1))
    assert accumulator.Tags()["tensors"] or accumulator.Tags().get("text")  # the issue, as text


def test_report_to_an_uninstalled_tracker_is_a_clear_error(monkeypatch, tiny_model_dir, session_dataset, tmp_path):
    import importlib.util

    from tuneforge.core.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    values = {"data": str(session_dataset), "model": str(tiny_model_dir), "output": str(tmp_path / "run"), "report_to": "tensorboard"}
    with pytest.raises(ConfigError) as caught:
        FineTuningPipeline(make_config(values)).train()
    assert "tuneforge[tensorboard]" in str(caught.value)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- tuneforge monitor


def test_monitor_replays_a_finished_run(capsys, monitored_run):
    assert main(["monitor", str(monitored_run)]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "resuming from step-000008" in text  # the timeline as it happened
    assert "loss_spike" in text and "jumped" in text  # the issue with its explanation
    assert "try:" in text
    assert "base vs tuned" in text  # the closing summary


def test_monitor_json_lists_every_event(capsys, monitored_run):
    assert main(["monitor", str(monitored_run), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [e["seq"] for e in read_events(monitored_run)]


def test_monitor_follows_events_as_they_are_written(capsys, monitored_run, tmp_path):
    """A writer thread appends a run's events over time; `tuneforge monitor --json` prints each one, then stops at
    run.finished (the writer's pid, this process, is alive all along)."""
    import threading

    events = read_events(monitored_run)
    events = events[: next(i for i, e in enumerate(events) if e["type"] == "run.finished") + 1]
    events[0]["pid"] = os.getpid()
    live = tmp_path / "live"
    live.mkdir()
    (live / "events.jsonl").write_text(json.dumps(events[0]) + "\n")

    def write():
        with open(live / "events.jsonl", "a") as handle:
            for index, event in enumerate(events[1:]):
                handle.write(json.dumps(event) + ("\n" if index % 2 else ""))  # half-written lines now and then
                handle.flush()
                time.sleep(0.01)
                if index % 2 == 0:
                    handle.write("\n")
                    handle.flush()

    writer = threading.Thread(target=write)
    writer.start()
    assert main(["monitor", str(live), "--json", "--interval", "0.02"]) == 0
    writer.join()
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["seq"] for e in printed] == [e["seq"] for e in events]


@pytest.mark.slow  # about 15 s: a real trainer process and a real monitor process side by side
def test_monitor_follows_a_live_run_until_it_finishes(tiny_model_dir, session_dataset, tmp_path):
    """`tuneforge monitor` started while the run trains prints its progress and returns when the run finishes."""
    run_dir = tmp_path / "live"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "COLUMNS": "200"}
    tuneforge = Path(sys.executable).parent / "tuneforge"
    trainer = subprocess.Popen([str(tuneforge), "finetune", "--data", str(session_dataset), "--model", str(tiny_model_dir),
                                "--output", str(run_dir), "--epochs", "2", "--batch-size", "4", "--test-split", "0",
                                "--no-evaluate-base", "--no-early-stopping", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "events.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        watcher = subprocess.run([str(tuneforge), "monitor", str(run_dir), "--json", "--interval", "0.1"],
                                 capture_output=True, text=True, env=env, timeout=180)
    finally:
        trainer.wait(timeout=180)
    assert watcher.returncode == 0, watcher.stderr
    events = [json.loads(line) for line in watcher.stdout.splitlines()]
    assert events[-1]["type"] == "run.finished" and events[-1]["status"] == "succeeded"
    total = next(e["total_steps"] for e in events if e["type"] == "train.started")
    assert total == 18 and [e["step"] for e in events if e["type"] == "train.step"] == list(range(1, total + 1))


def test_monitor_says_when_the_run_was_killed(capsys, monitored_run, tmp_path):
    """A run whose process is gone without a run.finished event: the monitor stops and says how to resume."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / "killed"
    killed.mkdir()
    events = read_events(monitored_run)
    events = events[: next(i for i, e in enumerate(events) if e["type"] == "run.finished")]  # the attempt that crashed
    events[0]["pid"] = dead.pid
    (killed / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert main(["monitor", str(killed), "--interval", "0.05"]) == 0
    err = capsys.readouterr().err
    assert "gone without finishing" in err and f"tuneforge resume {killed}" in err


def test_monitor_no_follow_on_an_unfinished_run(capsys, monitored_run, tmp_path):
    running = tmp_path / "running"
    running.mkdir()
    events = read_events(monitored_run)
    events = events[: next(i for i, e in enumerate(events) if e["type"] == "run.finished")]
    events[0]["pid"] = os.getpid()  # alive: without --no-follow it would wait
    (running / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert main(["monitor", str(running), "--no-follow"]) == 0
    assert "has not finished yet" in capsys.readouterr().err


def test_monitor_of_a_directory_without_events_exits_1(capsys, tmp_path):
    assert main(["monitor", str(tmp_path)]) == 1
    assert "no events.jsonl" in capsys.readouterr().err
