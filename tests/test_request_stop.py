"""Stopping from inside: code holding a run (a callback, a job runner's thread) asks it to stop at the next step
boundary with a reason; the run ends ``interrupted`` with a checkpoint and the reason recorded, and resumes exactly."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from helpers import read_events
from test_resume_kill import TOTAL_STEPS, assert_same_as_reference, config_values, uninterrupted_run
from tuneforge.config import make_config
from tuneforge.core.status import RunStatus
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train.checkpoint import verify_checkpoint
from tuneforge.train.signals import GracefulStop


@pytest.fixture
def reference(tiny_model_dir, session_dataset, tmp_path_factory) -> Path:
    return uninterrupted_run(tmp_path_factory, tiny_model_dir, session_dataset)


def test_a_callback_stops_the_run_at_step_3_with_its_reason_and_resume_is_exact(
    reference, tiny_model_dir, session_dataset, tmp_path
):
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)
    seen: list[int] = []

    def on_event(event):
        if event.get("type") == "train.step":
            seen.append(event["step"])
            if event["step"] == 3:
                assert pipeline.request_stop("pruned: validation loss above the median of its trials")
                assert not pipeline.request_stop("a later reason")  # the first reason wins

    pipeline = FineTuningPipeline(make_config(values), on_event=on_event, handle_signals=False)
    result = pipeline.train()
    assert result.status is RunStatus.INTERRUPTED and seen == [1, 2, 3]
    assert result.train["steps"] == 3 and result.train["checkpoint"] == "checkpoints/step-000003"
    assert verify_checkpoint(run_dir / "checkpoints" / "step-000003") == []
    assert not (run_dir / "adapter").exists()
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["status"] == "interrupted" and saved["train"]["interrupted"].startswith("pruned: validation loss")
    assert "pruned: validation loss" in saved["error"] and f"tuneforge resume {run_dir}" in saved["error"]
    [stopped] = [e for e in read_events(run_dir) if e["type"] == "train.interrupted"]
    assert stopped["step"] == 3 and stopped["signal"] is None and stopped["reason"].startswith("pruned:")

    resumed = FineTuningPipeline(make_config({**values, "resume": True})).train()
    assert resumed.status is RunStatus.SUCCEEDED and resumed.train["resumed_from_step"] == 3
    assert_same_as_reference(run_dir, reference, "request_stop after step 3")


def test_another_thread_stops_the_run_and_a_request_before_training_stops_it_before_step_1(
    tiny_model_dir, session_dataset, tmp_path
):
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)
    reached, done = threading.Event(), threading.Event()

    def on_event(event):
        if event.get("type") == "train.step" and event["step"] == 2:
            reached.set()
            done.wait(timeout=30)  # hold the loop until the other thread has asked

    pipeline = FineTuningPipeline(make_config(values), on_event=on_event)

    def cancel():
        reached.wait(timeout=60)
        pipeline.request_stop("cancelled by the job runner")
        done.set()

    thread = threading.Thread(target=cancel)
    thread.start()
    result = pipeline.train()
    thread.join()
    assert result.status == "interrupted" and result.train["steps"] == 2
    assert result.train["interrupted"] == "cancelled by the job runner"

    early = FineTuningPipeline(make_config({**values, "output": str(tmp_path / "early")}))
    early.request_stop("queued job cancelled")
    result = early.train()
    assert result.status == "interrupted" and result.train["steps"] == 0 and result.train["checkpoint"] is None
    assert not early._stop.requested  # the request belonged to that run: the pipeline's next one is not pre-stopped


def test_a_request_never_raises_and_a_signal_still_does():
    stop = GracefulStop(handle_signals=False)
    with stop, stop.deferring():
        stop.request("done already")  # the loop finished without seeing it: nothing to stop, no KeyboardInterrupt
    assert stop.requested and stop.reason == "done already" and stop.signal_name is None
