"""One job's process: ``python -m tuneforge.jobs.run_job JOB_ID`` trains it with ``FineTuningPipeline``.

A ``Worker`` starts it for a job it has claimed (status ``running``, ``worker_id`` its own), with the
store's URL in ``$TUNEFORGE_DATABASE_URL`` (never on the command line: it may hold a password). It:

- continues the run exactly when the run directory already holds one (``resume=True`` on the same
  directory: a job whose process was killed, or that was paused, goes on from its last checkpoint);
- copies the run's progress into the store as OpenAI events (``Step i/N: training loss=...``),
  checkpoints (each also a model) and the estimated finish;
- handles SIGTERM as the pipeline does (finish the step, save a checkpoint, stop): that is how the
  worker cancels and pauses it, and how it ends when its worker dies (Linux: the parent-death signal);
- records the outcome: succeeded (the fine-tuned model, trained tokens, a results file), failed
  (the error), or, stopped without a cancel or pause asked for, queued again to continue.

If it is killed outright (SIGKILL, out of memory) the worker notices the exit and queues the job again.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import time
from typing import Any

from tuneforge.core.errors import TuneforgeError
from tuneforge.core.status import RunStatus
from tuneforge.jobs.manager import FineTuningManager
from tuneforge.jobs.objects import TrainingJob

S = RunStatus
DATABASE_ENV = "TUNEFORGE_DATABASE_URL"
logger = logging.getLogger(__name__)


class JobRecorder:
    """The pipeline's ``on_event``: turns run events into job events, checkpoints and the estimated finish.

    Never raises: a store that is briefly unreachable must not stop training (the run's events.jsonl
    keeps everything anyway).
    """

    def __init__(self, manager: FineTuningManager, job: TrainingJob) -> None:
        self.manager, self.job = manager, job
        self.model_name = manager.fine_tuned_name(job)
        self.metrics: dict[str, Any] = {}
        self._estimate_written = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            self._record(event)
        except Exception as error:  # noqa: BLE001 - see the class docstring
            logger.warning("could not record %s for %s: %s", event.get("type"), self.job.id, error)

    def _record(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        add = self.manager.add_event
        job_id = self.job.id
        if kind == "train.step":
            step, total = int(event["step"]), event.get("total_steps")
            data = {"step": step, "total_steps": total, "train_loss": event.get("loss"),
                    "train_mean_token_accuracy": event.get("accuracy"), "epoch": event.get("epoch"),
                    "learning_rate": event.get("learning_rate")}
            self.metrics.update({k: v for k, v in data.items() if k in ("step", "train_loss", "train_mean_token_accuracy")})
            add(job_id, f"Step {step}/{total}: training loss={_fmt(event.get('loss'))}", type_="metrics", data=data)
            self._update_estimate(event)
        elif kind == "eval.result":
            data = {"step": event.get("step"), "valid_loss": event.get("validation_loss"),
                    "valid_mean_token_accuracy": event.get("validation_accuracy")}
            self.metrics.update({k: v for k, v in data.items() if v is not None})
            add(job_id, f"Step {event.get('step')}: validation loss={_fmt(event.get('validation_loss'))}",
                type_="metrics", data=data)
        elif kind == "checkpoint.saved":
            self._checkpoint(event)
        elif kind == "issue.detected":
            level = "error" if event.get("severity") == "error" else "warn"
            add(job_id, str(event.get("message") or event.get("kind")), level=level,
                data={k: event.get(k) for k in ("kind", "severity", "step", "suggestion", "action")})
        elif kind in ("train.estimate", "train.resumed", "train.early_stopped", "train.rollback", "data.originals_changed"):
            add(job_id, str(event.get("message") or kind))
        elif kind == "train.interrupted":
            add(job_id, f"Training stopped at step {event.get('step')}; checkpoint kept ({event.get('checkpoint')})")
        elif kind == "train.started":
            add(job_id, f"Training started: {event.get('total_steps')} steps, {event.get('examples')} examples",
                data={"total_steps": event.get("total_steps"), "start_step": event.get("start_step")})

    def _checkpoint(self, event: dict[str, Any]) -> None:
        from tuneforge.jobs.ids import CHECKPOINT_PREFIX, new_id

        step = int(event["step"])
        self.manager.store.upsert_checkpoint({
            "id": new_id(CHECKPOINT_PREFIX), "job_id": self.job.id, "step_number": step, "created_at": time.time(),
            "path": str(event.get("path")), "metrics": {**self.metrics, "step": step},
            "fine_tuned_model_checkpoint": f"{self.model_name}:ckpt-step-{step}"})
        self.manager.add_event(self.job.id, f"Checkpoint created at step {step}")

    def _update_estimate(self, event: dict[str, Any]) -> None:
        now = time.time()
        elapsed, step, total = event.get("elapsed_seconds"), event.get("step"), event.get("total_steps")
        if now - self._estimate_written < 2 or not (elapsed and step and total):
            return
        self._estimate_written = now
        self.manager.store.update_job(self.job.id, {"estimated_finish": now + elapsed / step * (total - step)})


def run_job(manager: FineTuningManager, job_id: str, worker_id: str) -> int:
    """Train job ``job_id`` held by ``worker_id`` and record the outcome; 0 unless the job was not this process's to run."""
    from tuneforge.config import make_config
    from tuneforge.core.failures import describe_failure
    from tuneforge.pipeline import FineTuningPipeline

    job = manager.get_job(job_id)
    if job.status != S.RUNNING or job.worker_id != worker_id:
        logger.warning("job %s is %s and held by %s, not by %s: nothing to do", job_id, job.status, job.worker_id, worker_id)
        return 3
    manager.store.update_job(job_id, {"pid": os.getpid()}, only_if_worker=worker_id)
    if _finished_before(job):  # it succeeded, and its process died before the store heard
        return _record_success(manager, job, _results(job))
    if (job.method or {}).get("type") == "search":  # a hyperparameter search job (manager.start_search)
        from tuneforge.jobs.search_job import run_search_job

        return run_search_job(manager, job)
    resume = (job.run_dir / "config.yaml").is_file()
    manager.add_event(job_id, "Fine-tuning job continued from its last checkpoint" if resume else "Fine-tuning job started")
    pipeline = FineTuningPipeline(make_config({**job.config, "resume": resume}), on_event=JobRecorder(manager, job),
                                  handle_signals=True)
    try:
        result = pipeline.train()
    except KeyboardInterrupt as stop:  # a second signal, or one outside training: stopped at once
        return _record_stopped(manager, job, f"stopped at once by {stop or 'a signal'}")
    except TuneforgeError as error:
        return _record_failure(manager, job, "training_failed", str(error))
    except Exception as error:  # noqa: BLE001 - the pipeline wrote the traceback to RUN_DIR/error.log
        return _record_failure(manager, job, "internal_error", describe_failure(error, "the job"))
    if result.status == S.SUCCEEDED:
        return _record_success(manager, job, result.to_dict())
    if result.status in (S.INTERRUPTED, S.CANCELLED):
        return _record_stopped(manager, job, result.error or "stopped")
    return _record_failure(manager, job, "training_failed", result.error or f"the run ended {result.status}")


def _record_success(manager: FineTuningManager, job: TrainingJob, results: dict[str, Any]) -> int:
    name = manager.fine_tuned_name(job)
    result_file = _results_file(manager, job)
    now = time.time()
    trained = (results.get("train") or {}).get("trained_tokens")
    manager.store.update_job(job.id, {"status": str(S.SUCCEEDED), "fine_tuned_model": name, "finished_at": now,
                                      "trained_tokens": trained, "result_files": [result_file] if result_file else [],
                                      "estimated_finish": None, "error": None},
                             only_if_status=(S.RUNNING, S.INTERRUPTED))
    if manager.get_job(job.id).status == S.SUCCEEDED:
        manager.store.upsert_model({"id": name, "kind": "fine-tuned", "created": now, "owned_by": "org-local",
                                    "job_id": job.id, "base": job.config.get("model")})
        manager.add_event(job.id, f"New fine-tuned model created: {name}")
        manager.add_event(job.id, "The job has successfully completed")
    return 0


def _record_stopped(manager: FineTuningManager, job: TrainingJob, why: str) -> int:
    """Stopped at a checkpoint: cancelled and paused stay so; stopped by anything else, queued again to continue."""
    current = manager.get_job(job.id)
    if current.status == S.RUNNING:
        if manager.store.update_job(job.id, {"status": str(S.QUEUED), "estimated_finish": None},
                                    only_if_status=(S.RUNNING,)):
            manager.add_event(job.id, f"The job's process was stopped ({why}); queued to continue from its last checkpoint",
                              level="warn")
    else:
        manager.store.update_job(job.id, {"estimated_finish": None})
    return 0


def _record_failure(manager: FineTuningManager, job: TrainingJob, code: str, message: str) -> int:
    error = {"code": code, "message": message, "param": None}
    if manager.store.update_job(job.id, {"status": str(S.FAILED), "error": error, "finished_at": time.time(),
                                         "estimated_finish": None}, only_if_status=(S.RUNNING,)):
        manager.add_event(job.id, f"The job failed: {message}", level="error")
    return 0


def _results(job: TrainingJob) -> dict[str, Any]:
    import json

    try:
        loaded = json.loads((job.run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _finished_before(job: TrainingJob) -> bool:
    return _results(job).get("status") == S.SUCCEEDED


def _results_file(manager: FineTuningManager, job: TrainingJob) -> str | None:
    """The job's step metrics as a CSV file (purpose ``fine-tune-results``), as OpenAI's ``result_files`` hold."""
    from tuneforge.monitor.events import read_events

    steps: dict[int, dict[str, Any]] = {}
    for event in read_events(job.run_dir / "events.jsonl"):
        if event.get("type") == "train.step":
            steps.setdefault(int(event["step"]), {}).update(
                {"train_loss": event.get("loss"), "train_accuracy": event.get("accuracy")})
        elif event.get("type") == "eval.result" and event.get("step") is not None:
            steps.setdefault(int(event["step"]), {}).update(
                {"valid_loss": event.get("validation_loss"), "valid_mean_token_accuracy": event.get("validation_accuracy")})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])
    for step in sorted(steps):
        row = steps[step]
        writer.writerow([step] + [row.get(k, "") if row.get(k) is not None else ""
                                  for k in ("train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")])
    try:
        return manager.files.upload(out.getvalue().encode(), f"{job.id}-results.csv", purpose="fine-tune-results").id
    except TuneforgeError as error:
        logger.warning("could not store the results file of %s: %s", job.id, error)
        return None


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


def die_with_parent() -> None:
    """Linux: get SIGTERM when the worker that started this process dies, so the job stops at a checkpoint."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the worker died before the line above
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneforge.jobs.run_job", description="Train one claimed job.")
    parser.add_argument("job_id")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--home", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    die_with_parent()
    manager = FineTuningManager(database_url=os.environ.get(DATABASE_ENV) or None, home=args.home)
    try:
        return run_job(manager, args.job_id, args.worker_id)
    finally:
        manager.store.dispose()


if __name__ == "__main__":
    sys.exit(main())
