"""Jobs trained by a ``Worker``: each job in its own process, cancel / pause / resume through the graceful
stop, a killed job process or a dead worker noticed and the job continued from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import make_rows

# early stopping off: these tests follow every planned step (auto turns it on with a validation split)
QUICK = {"max_length": 64, "estimate_steps": 0, "evaluate_base": False, "max_new_tokens": 4, "lora_r": 4,
         "early_stopping": False}


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture
def manager(tmp_path: Path):
    from tuneforge.jobs import FineTuningManager

    made = FineTuningManager(home=tmp_path / "home")
    yield made
    made.store.dispose()


@pytest.fixture
def training_file(manager):
    return manager.upload_file(_jsonl(make_rows(20)), "colors.jsonl")


@pytest.fixture
def make_job(manager, training_file, tiny_model_dir):
    def make(n_epochs: int = 2, **extra):
        return manager.create_job(training_file.id, model=str(tiny_model_dir), suffix="colors", seed=5,
                                  hyperparameters={"n_epochs": n_epochs, "batch_size": 4}, extra={**QUICK, **extra})
    return make


@pytest.fixture
def worker(manager):
    """A worker running in a background thread; stopped (its job processes with it) at the end."""
    from tuneforge.jobs import Worker

    made = Worker(manager, poll_seconds=0.1, stale_seconds=5)
    made.start()
    yield made
    made.stop()


def wait_for(condition, timeout: float = 120.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def finished(manager, job_id: str, worker=None):
    def done():
        job = manager.get_job(job_id)
        return job if job.status.is_terminal and job.status != "interrupted" and (
            worker is None or job_id not in worker.children) else None
    return wait_for(done, what=f"{job_id} to finish")


def trained_steps(manager, job_id: str) -> int:
    steps = [e["data"]["step"] for e in manager.list_events(job_id, limit=1000).data
             if e["type"] == "metrics" and e["data"] and "train_loss" in e["data"]]
    return max(steps, default=0)


def adapter_of(run_dir: Path):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_a_job_runs_to_a_fine_tuned_model(manager, make_job, worker, tiny_model_dir):
    job = make_job()
    done = finished(manager, job.id, worker)
    assert done.status == "succeeded", done.error
    wire = done.to_openai()
    assert wire["fine_tuned_model"] == f"ft:{tiny_model_dir.name}:colors:{job.id}"
    assert wire["finished_at"] and wire["trained_tokens"] > 0 and wire["error"] is None
    csv = manager.file_content(wire["result_files"][0]).decode()
    assert csv.startswith("step,train_loss") and len(csv.splitlines()) > 2
    events = manager.list_events(job.id, limit=100).data
    assert events[0]["message"] == "The job has successfully completed"
    assert any(e["type"] == "metrics" and e["message"].startswith("Step 1/") for e in events)
    base, weights = manager.resolve_model(done.fine_tuned_model)
    assert base == str(tiny_model_dir) and weights == done.run_dir / "adapter"
    checkpoints = manager.list_checkpoints(job.id).data
    assert checkpoints and all(c["fine_tuned_model_checkpoint"].endswith(f":ckpt-step-{c['step_number']}") for c in checkpoints)
    listed = {m["id"] for m in manager.list_models()}
    assert done.fine_tuned_model in listed and checkpoints[0]["fine_tuned_model_checkpoint"] in listed
    assert manager.resolve_model(checkpoints[0]["fine_tuned_model_checkpoint"]).weights.is_dir()
    progress = manager.monitor_progress(job.id)
    assert progress.step == progress.total_steps and progress.epoch == 2 and "loss" in progress.metrics
    assert manager.delete_model(done.fine_tuned_model)["deleted"] is True
    assert done.fine_tuned_model not in {m["id"] for m in manager.list_models()}


@pytest.mark.slow  # a job process: tens of seconds on 2 cores
def test_cancel_stops_gracefully_with_a_checkpoint(manager, make_job, worker):
    from tuneforge.jobs import Conflict

    job = make_job(n_epochs=60)
    wait_for(lambda: trained_steps(manager, job.id) >= 2, what="training to start")
    assert manager.cancel(job.id).status == "cancelled"
    wait_for(lambda: job.id not in worker.children, what="the job process to stop")
    done = manager.get_job(job.id)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    results = json.loads((done.run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["train"]["steps"] < 300
    assert [c["step_number"] for c in manager.list_checkpoints(job.id).data][0] == results["train"]["steps"]
    with pytest.raises(Conflict):
        manager.cancel(job.id)


@pytest.mark.slow  # two job processes' start-up: tens of seconds on 2 cores
def test_pause_then_resume_continues_to_success(manager, make_job, worker):
    job = make_job(n_epochs=40)
    wait_for(lambda: trained_steps(manager, job.id) >= 2, what="training to start")
    assert manager.pause(job.id).to_openai()["status"] == "paused"
    wait_for(lambda: job.id not in worker.children, what="the job process to stop")
    paused = manager.get_job(job.id)
    assert paused.status == "interrupted" and manager.list_checkpoints(job.id).data
    stopped_at = json.loads((paused.run_dir / "results.json").read_text())["train"]["steps"]
    assert manager.resume(job.id).status == "queued"
    done = finished(manager, job.id, worker)
    assert done.status == "succeeded", done.error
    resumed = [e for e in manager.list_events(job.id, limit=1000).data if e["message"].startswith("resuming from")]
    assert resumed and f"step-{stopped_at:06d}" in resumed[0]["message"]


@pytest.mark.slow  # a job process: tens of seconds on 2 cores
def test_a_restarted_worker_recovers_a_running_job(manager, make_job):
    """A job left running by a worker process that is gone is taken back at once on the same machine and finishes."""
    from tuneforge.jobs import Worker

    job = make_job()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_worker = f"{socket.gethostname()}:{gone.pid}:dead00"
    assert manager.store.claim_next(dead_worker, socket.gethostname())["id"] == job.id
    worker = Worker(manager, poll_seconds=0.1, stale_seconds=60)  # the heartbeat is fresh: only the pid says it is gone
    worker.run(until=lambda w: manager.get_job(job.id).status.is_terminal and not w.busy, max_seconds=180)
    done = manager.get_job(job.id)
    assert done.status == "succeeded" and done.retries == 1, done.error
    assert any("stopped responding" in e["message"] for e in manager.list_events(job.id, limit=100).data)


def test_a_stale_worker_elsewhere_gives_its_job_back_and_the_retry_limit_holds(manager, make_job):
    from tuneforge.jobs import Worker

    first, second = make_job(), make_job()
    for job in (first, second):
        assert manager.store.claim_next("other-machine:4242:abcdef", "other-machine")
    manager.store.update_job(first.id, {"heartbeat_at": time.time() - 60})
    manager.store.update_job(second.id, {"heartbeat_at": time.time() - 60, "retries": 3, "max_retries": 3})
    Worker(manager, stale_seconds=10).recover()
    again = manager.get_job(first.id)
    assert again.status == "queued" and again.worker_id is None and again.retries == 1
    failed = manager.get_job(second.id)
    assert failed.status == "failed" and failed.error["code"] == "job_process_died"
    assert failed.to_openai()["error"]["message"]


def test_a_fresh_heartbeat_elsewhere_is_left_alone(manager, make_job):
    from tuneforge.jobs import Worker

    job = make_job()
    manager.store.claim_next("other-machine:4242:abcdef", "other-machine")
    Worker(manager, stale_seconds=10).recover()
    assert manager.get_job(job.id).status == "running"


@pytest.mark.slow
def test_sigkill_of_the_job_process_resumes_to_the_uninterrupted_adapter(manager, make_job, worker):
    """The job process is killed outright mid-training; the worker notices, the job continues from its
    checkpoint and ends with exactly the adapter of the same job run without interruption."""
    settings = dict(n_epochs=12, saving_strategy="steps", save_steps=5)
    reference = make_job(**settings)
    reference_done = finished(manager, reference.id, worker)
    assert reference_done.status == "succeeded", reference_done.error

    job = make_job(**settings)
    wait_for(lambda: any(c["step_number"] >= 5 for c in manager.store.list_checkpoints(job.id)), what="a checkpoint")
    pid = manager.store.get_job(job.id)["pid"]
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: manager.get_job(job.id).retries == 1, timeout=10, what="the worker to notice")
    noticed = time.monotonic() - started
    done = finished(manager, job.id, worker)
    assert done.status == "succeeded" and done.retries == 1, done.error
    assert noticed < 5
    assert any("killed by SIGKILL" in e["message"] for e in manager.list_events(job.id, limit=1000).data)
    expected, got = adapter_of(reference_done.run_dir), adapter_of(done.run_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), name


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TUNEFORGE_TEST_POSTGRES_URL"),
                    reason="TUNEFORGE_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
def test_a_job_runs_through_postgresql(tmp_path, training_file, tiny_model_dir):
    """The whole path on PostgreSQL: the worker claims, the job process records events and the outcome there."""
    from tuneforge.jobs import FineTuningManager, Worker
    from tuneforge.jobs.store import make_engine, metadata

    url = os.environ["TUNEFORGE_TEST_POSTGRES_URL"]
    engine = make_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    manager = FineTuningManager(database_url=url, home=tmp_path / "pg-home")
    try:
        uploaded = manager.upload_file(_jsonl(make_rows(20)), "colors.jsonl")
        job = manager.create_job(uploaded.id, model=str(tiny_model_dir), hyperparameters={"n_epochs": 2, "batch_size": 4},
                                 extra=QUICK)
        Worker(manager, poll_seconds=0.1).run(until=lambda w: manager.get_job(job.id).status.is_terminal and not w.busy,
                                              max_seconds=180)
        done = manager.get_job(job.id)
        assert done.status == "succeeded" and done.fine_tuned_model, done.error
        assert any(e["type"] == "metrics" for e in manager.list_events(job.id, limit=100).data)
    finally:
        manager.store.dispose()
