"""``tuneforge jobs ...`` and ``tuneforge worker``: thin faces over FineTuningManager and Worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import make_rows, write_jsonl

QUICK_SET = ["--set", "max_length=64", "--set", "estimate_steps=0", "--set", "evaluate_base=false", "--set", "lora_r=4"]


def tuneforge(*argv: str) -> int:
    from tuneforge.cli.main import main

    return main(list(argv))


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TUNEFORGE_DATABASE_URL", raising=False)
    return tmp_path / "home"


def _create(tmp_path: Path, model: Path, capsys, *more: str) -> dict:
    data = write_jsonl(tmp_path / "train.jsonl", make_rows(20))
    assert tuneforge("jobs", "create", "--data", str(data), "--model", str(model), "--epochs", "2", "--batch-size", "4",
                     "--suffix", "cli", "--seed", "1", *QUICK_SET, *more, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_jobs_create_list_show_events_pause_resume_cancel(home, tmp_path, tiny_model_dir, capsys):
    job = _create(tmp_path, tiny_model_dir, capsys)
    assert job["status"] == "queued" and job["hyperparameters"]["n_epochs"] == 2 and job["seed"] == 1

    assert tuneforge("jobs", "list", "--json") == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)["data"]] == [job["id"]]
    assert tuneforge("jobs", "list") == 0
    assert job["id"] in capsys.readouterr().out.replace("\n", "")

    assert tuneforge("jobs", "show", job["id"], "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_dir"].startswith(str(home)) and shown["progress"]["status"] == "queued"

    assert tuneforge("jobs", "events", job["id"]) == 0
    assert "Files validated, moving job to queued state" in capsys.readouterr().out

    assert tuneforge("jobs", "pause", job["id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "paused"
    assert tuneforge("jobs", "resume", job["id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"
    assert tuneforge("jobs", "cancel", job["id"]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert tuneforge("jobs", "cancel", job["id"]) == 1
    assert "cannot cancel" in capsys.readouterr().err


def test_jobs_create_refuses_a_bad_file_with_its_line(home, tmp_path, capsys):
    rows = [json.dumps(row) for row in make_rows(12)]
    rows[2] = "{not json"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(rows) + "\n")
    assert tuneforge("jobs", "create", "--data", str(bad)) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:3: invalid_json" in err and "Traceback" not in err


def test_jobs_unknown_id_and_bad_set(home, tmp_path, tiny_model_dir, capsys):
    assert tuneforge("jobs", "show", "ftjob-" + "0" * 24) == 1
    assert "No such fine-tuning job" in capsys.readouterr().err
    assert tuneforge("jobs", "show", "../../etc/passwd") == 1
    assert "No such fine-tuning job" in capsys.readouterr().err
    data = write_jsonl(tmp_path / "train.jsonl", make_rows(20))
    assert tuneforge("jobs", "create", "--data", str(data), "--model", str(tiny_model_dir), "--set", "lora_r=zero") == 1
    assert "lora_r" in capsys.readouterr().err


@pytest.mark.slow  # three job processes' start-up on 2 cores
def test_a_killed_worker_process_is_recovered_by_the_next_worker(home, tmp_path, tiny_model_dir, capsys):
    """`tuneforge worker` is killed with SIGKILL mid-training: its job process stops at a checkpoint (parent-death
    signal) and a new `tuneforge worker` continues the job to success."""
    from tuneforge.jobs import FineTuningManager

    # early stopping off: auto's would end this run at step 10, before the kill it is about
    job = _create(tmp_path, tiny_model_dir, capsys, "--epochs", "40", "--set", "saving_strategy=steps", "--set", "save_steps=5",
                  "--set", "early_stopping=false")
    manager = FineTuningManager()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "tuneforge.cli.main", "worker", "--stale-seconds", "5"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not manager.store.list_checkpoints(job["id"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert manager.store.list_checkpoints(job["id"]), "no checkpoint was written"
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 180
            while not manager.get_job(job["id"]).status.is_terminal and time.monotonic() < deadline:
                time.sleep(0.3)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
    done = manager.get_job(job["id"])
    assert done.status == "succeeded", done.error
    messages = [e["message"] for e in manager.list_events(job["id"], limit=1000).data]
    assert any(m.startswith("resuming from step-") for m in messages), messages
