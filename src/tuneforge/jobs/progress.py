"""What a job has done so far: its progress from the run's events.jsonl, its event list and its checkpoints (wire form)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from tuneforge.core.status import RunStatus
from tuneforge.jobs.errors import NotFound
from tuneforge.jobs.files import _check_limit
from tuneforge.jobs.models import checkpoint_exists
from tuneforge.jobs.objects import Page, TrainingJob, TrainingStatus, paginate
from tuneforge.jobs.store import JobStore

S = RunStatus


class JobProgress:
    """``FineTuningManager``'s progress part; it needs the manager's ``store`` and ``get_job``."""

    store: JobStore

    if TYPE_CHECKING:  # what the manager provides
        def get_job(self, job_id: str) -> TrainingJob:
            ...

    def monitor_progress(self, job_id: str) -> TrainingStatus:
        """Status, step / total steps, epoch, the latest metrics, ETA and detected issues, from the run's events.jsonl."""
        from tuneforge.monitor.events import read_events

        job = self.get_job(job_id)
        status = TrainingStatus(job_id=job.id, status=job.status, error=job.error)
        for event in read_events(job.run_dir / "events.jsonl"):
            kind = event.get("type")
            if kind == "train.started":
                status.total_steps = event.get("total_steps")
            elif kind == "train.estimate" and status.step == 0:
                status.eta_seconds = event.get("seconds")
            elif kind == "train.step":
                status.step = int(event.get("step", 0))
                status.total_steps = event.get("total_steps", status.total_steps)
                status.epoch = event.get("epoch")
                status.metrics.update({k: event[k] for k in ("loss", "accuracy", "perplexity", "learning_rate", "grad_norm",
                                                             "tokens_per_second") if k in event})
                elapsed = event.get("elapsed_seconds")
                if elapsed and status.step and status.total_steps:
                    status.eta_seconds = round(elapsed / status.step * (status.total_steps - status.step), 1)
            elif kind == "eval.result":
                status.metrics.update({k: v for k, v in event.items() if k.startswith("validation_")})
            elif kind == "issue.detected":
                status.issues.append({k: v for k, v in event.items() if k not in ("seq", "type", "time")})
            elif kind == "checkpoint.saved":
                status.checkpoint = event.get("path")
        if job.status != S.RUNNING:
            status.eta_seconds = None if job.status.is_terminal else status.eta_seconds
        return status

    def list_events(self, job_id: str, after: str | None = None, limit: int = 20) -> Page[dict[str, Any]]:
        """A page of the job's ``fine_tuning.job.event`` objects, newest first, strictly after the event ``after``."""
        self.get_job(job_id)
        _check_limit(limit, 1000)
        events = [event_wire(row) for row in self.store.list_events(job_id)]
        return paginate(events, after, limit, key=lambda e: e["id"], not_found=not_found_after("event"))

    def list_checkpoints(self, job_id: str, after: str | None = None, limit: int = 10) -> Page[dict[str, Any]]:
        """A page of the job's ``fine_tuning.job.checkpoint`` objects that still exist on disk, newest step first."""
        job = self.get_job(job_id)
        _check_limit(limit, 1000)
        rows = [row for row in self.store.list_checkpoints(job_id) if checkpoint_exists(job, row)]
        return paginate([checkpoint_wire(row) for row in rows], after, limit, key=lambda c: c["id"], first_last=True,
                        not_found=not_found_after("checkpoint"))

    def add_event(self, job_id: str, message: str, level: str = "info", type_: str = "message",
                  data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append a ``fine_tuning.job.event`` to the job's list (the job process and the worker use it)."""
        return event_wire(self.store.add_event(job_id, message, level, type_, data))


def event_wire(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "fine_tuning.job.event", "created_at": int(row["created_at"]), "level": row["level"],
            "message": row["message"], "type": row["type"], "data": row["data"]}


def checkpoint_wire(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "fine_tuning.job.checkpoint", "created_at": int(row["created_at"]),
            "fine_tuned_model_checkpoint": row["fine_tuned_model_checkpoint"], "fine_tuning_job_id": row["job_id"],
            "step_number": row["step_number"], "metrics": dict(row["metrics"] or {})}


def not_found_after(kind: str) -> Callable[[str], NotFound]:
    """What ``paginate`` raises for an ``after`` id that is not in the list of ``kind``."""
    return lambda after: NotFound(f"after: no {kind} {str(after)[:80]!r} in this list", param="after")
