"""A run directory is self-sufficient (finding 6) and a resumed run reuses the base evaluation (finding 8).

The prepared splits live in RUN_DIR/data (with their SHA-256), config.yaml holds absolute paths, so
``resume``, ``chat --adapter`` and ``eval --adapter`` work from any directory, also for a run started
from in-memory records through the API; a resumed run does not evaluate the base model again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import make_rows, read_events, write_jsonl
from test_resume_kill import KILL_CONFIG, TOTAL_STEPS, adapter, loss_curve, max_difference
from tuneforge.cli.main import main
from tuneforge.config import make_config
from tuneforge.core.errors import CheckpointError
from tuneforge.data.snapshot import read_snapshot
from tuneforge.pipeline import FineTuningPipeline


def _stop_at(step: int):
    """An on_event callback that asks its pipeline to stop after ``step`` (the pipeline is bound later)."""
    holder: dict[str, FineTuningPipeline] = {}

    def on_event(event):
        if event.get("type") == "train.step" and event["step"] == step:
            holder["pipeline"].request_stop(f"test stop at {step}")

    return holder, on_event


def _interrupted_run(values: dict, step: int, data=None):
    holder, on_event = _stop_at(step)
    pipeline = holder["pipeline"] = FineTuningPipeline(make_config(values), on_event=on_event)
    result = pipeline.train(data)
    assert result.status == "interrupted" and result.train["steps"] == step
    return result


def test_api_run_from_records_resumes_from_another_directory_exactly(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from tuneforge.data.manager import TrainingDataManager

    records = make_rows(40)
    monkeypatch.chdir(tiny_model_dir.parent)  # the model is given by a relative path
    values = {"model": tiny_model_dir.name, **KILL_CONFIG}

    def prepared():
        return TrainingDataManager().prepare_data(records, validation_split=values["validation_split"],
                                                  test_split=values["test_split"], seed=values["seed"])

    reference = FineTuningPipeline(make_config({**values, "output": str(tmp_path / "reference")})).train(prepared())
    assert reference.status == "succeeded" and reference.train["steps"] == TOTAL_STEPS

    run_dir = tmp_path / "run"
    _interrupted_run({**values, "output": str(run_dir)}, 5, prepared())
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"] is None and saved["model"] == str(tiny_model_dir)  # absolute, not "tiny-llama"
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    assert [manifest["files"][s]["rows"] for s in ("train", "validation", "test")] == [36, 4, 0]
    assert all(len(manifest["files"][s]["sha256"]) == 64 for s in manifest["files"])
    assert manifest["metadata"]["source"] == "memory"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code = main(["resume", str(run_dir), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    resumed = json.loads(out.out)
    assert resumed["status"] == "succeeded" and resumed["train"]["resumed_from_step"] == 5
    assert max_difference(adapter(reference.run_dir), adapter(run_dir)) <= 1e-6
    assert [round(loss, 6) for _, loss in loss_curve(run_dir)] == [round(loss, 6) for _, loss in loss_curve(reference.run_dir)]

    # chat --adapter and eval --adapter find the base through the run's absolute model path, from here too.
    code = main(["chat", "--adapter", str(run_dir), "--prompt", "color of the sky?", "--max-new-tokens", "3"])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = write_jsonl(elsewhere / "check.jsonl", make_rows(6))
    code = main(["eval", "--data", str(data), "--adapter", str(run_dir), "--max-new-tokens", "3", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["resources"]["examples"] == 6


def test_the_snapshot_round_trips_and_a_changed_file_is_refused(tmp_path, tiny_model_dir, session_dataset):
    run_dir = tmp_path / "run"
    values = {"data": str(session_dataset), "model": str(tiny_model_dir), "output": str(run_dir), **KILL_CONFIG,
              "test_split": 0.1}
    first = _interrupted_run(values, 2)
    snapshot = read_snapshot(run_dir / "data")
    assert (len(snapshot.examples), len(snapshot.validation), len(snapshot.test)) == (32, 4, 4)
    assert snapshot.examples[0].source.startswith(str(session_dataset) + ":")  # where each row came from
    assert first.data["train"] == 32

    train_file = run_dir / "data" / "train.jsonl"
    original = train_file.read_text()
    train_file.write_text(original.replace("blue", "BLUE", 1))
    with pytest.raises(CheckpointError, match="train.jsonl changed since the run wrote it"):
        FineTuningPipeline(make_config({**values, "resume": True})).train()
    train_file.write_text(original)

    # A run from before snapshots (no data/) resumes from its data files and gets its snapshot then.
    shutil.rmtree(run_dir / "data")
    resumed = FineTuningPipeline(make_config({**values, "resume": True})).train()
    assert resumed.status == "succeeded" and resumed.train["resumed_from_step"] == 2
    assert (run_dir / "data" / "manifest.json").is_file()


def test_resume_reuses_the_base_evaluation_of_the_first_attempt(tmp_path, tiny_model_dir, session_dataset):
    run_dir = tmp_path / "run"
    values = {"data": str(session_dataset), "model": str(tiny_model_dir), "output": str(run_dir), **KILL_CONFIG,
              "evaluate_base": True, "test_split": 0.2}
    first = _interrupted_run(values, 3)
    assert first.base is not None and (run_dir / "base_predictions.jsonl").is_file()

    resumed = FineTuningPipeline(make_config({**values, "resume": True})).train()
    assert resumed.status == "succeeded"
    events = read_events(run_dir)
    assert len([e for e in events if e["type"] == "eval.started" and e["model"] == "base"]) == 1
    assert [e["model"] for e in events if e["type"] == "eval.reused"] == ["base"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["base"] == first.base.performance and results["evaluation"]["base"] == first.base.resources
    assert results["tuned"] is not None
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8 and all(p["base"] is not None and p["tuned"] is not None for p in predictions)
    assert [p["base"] for p in predictions] == [p["prediction"] for p in first.base.predictions]

    # A setting that changes the evaluation (here the answer length) evaluates the base again.
    again = tmp_path / "again"
    changed = {**values, "output": str(again)}
    _interrupted_run(changed, 3)
    FineTuningPipeline(make_config({**changed, "resume": True, "max_new_tokens": 4})).train()
    assert len([e for e in read_events(again) if e["type"] == "eval.started" and e["model"] == "base"]) == 2
