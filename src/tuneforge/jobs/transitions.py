"""A job's states and the moves between them: created → validating_files → queued; cancel, pause, resume.

Job states: validating_files → queued → running → succeeded | failed | cancelled; ``pause`` moves a
running or queued job to ``interrupted`` (OpenAI's ``paused``: stopped at a step boundary with a
checkpoint) and ``resume`` queues it again, to continue exactly from that checkpoint. Every move is
a conditional update of the store (only from the status just read), so concurrent callers never
both win; the worker makes the running → finished moves (worker.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tuneforge.core.status import RunStatus
from tuneforge.jobs.errors import Conflict
from tuneforge.jobs.objects import TrainingJob, wire_status
from tuneforge.jobs.store import JobStore

S = RunStatus
ACTIVE = (S.VALIDATING_FILES, S.QUEUED, S.RUNNING)


class JobTransitions:
    """``FineTuningManager``'s state moves; it needs the manager's ``store``, ``max_retries``, ``get_job`` and ``add_event``."""

    store: JobStore
    max_retries: int

    if TYPE_CHECKING:  # what the manager provides
        def get_job(self, job_id: str) -> TrainingJob:
            ...

        def add_event(self, job_id: str, message: str, level: str = "info", type_: str = "message",
                      data: dict[str, Any] | None = None) -> dict[str, Any]:
            ...

    def cancel(self, job_id: str) -> TrainingJob:
        """Cancel a job that has not finished: status ``cancelled`` at once.

        A running job is stopped gracefully by its worker (SIGTERM to the job's process: the step is
        finished and a checkpoint kept). ``Conflict`` for a job that already ended.
        """
        allowed = (*ACTIVE, S.INTERRUPTED)
        return self._transition(job_id, allowed, S.CANCELLED, "cancel", {"finished_at": time.time()},
                                "Fine-tuning job cancelled")

    stop = cancel  # the seed vocabulary's name: stopping a job is cancelling it, keeping its checkpoint

    def pause(self, job_id: str) -> TrainingJob:
        """Pause a running or queued job (status ``interrupted``, OpenAI's ``paused``); its checkpoint is kept.

        ``Conflict`` for a job in any other state. ``resume`` continues it exactly.
        """
        return self._transition(job_id, (S.QUEUED, S.RUNNING, S.VALIDATING_FILES), S.INTERRUPTED, "pause", {},
                                "Fine-tuning job paused; resume continues from its last checkpoint")

    def resume(self, job_id: str) -> TrainingJob:
        """Queue a paused job again (status ``queued``); it continues from its last checkpoint. ``Conflict`` otherwise."""
        return self._transition(job_id, (S.INTERRUPTED,), S.QUEUED, "resume", {"queued_at": time.time()},
                                "Fine-tuning job resumed; queued to continue from its last checkpoint")

    def _queue(self, job_id: str, model: str, config: dict[str, Any], hyper: dict[str, Any], training_file: str,
               validation_file: str | None, suffix: str | None, seed: int, metadata: dict[str, str] | None,
               method_type: str = "supervised", kind: dict[str, Any] | None = None) -> TrainingJob:
        now = time.time()
        row = {"id": job_id, "status": str(S.VALIDATING_FILES), "model": model, "created_at": now, "queued_at": None,
               "training_file": training_file, "validation_file": validation_file, "hyperparameters": hyper,
               # kind: a search job's own method object; else OpenAI's {type, <type>: {hyperparameters}}
               "method": kind or {"type": method_type, method_type: {"hyperparameters": hyper}},
               "suffix": suffix, "seed": seed, "config": config, "run_dir": str(config["output"]), "error": None,
               "result_files": [], "metadata": metadata, "retries": 0, "max_retries": self.max_retries}
        self.store.insert_job(row)
        self.store.upsert_model({"id": model, "kind": "base", "created": now, "owned_by": "system", "base": model})
        self.add_event(job_id, f"Created fine-tuning job: {job_id}")
        self.add_event(job_id, f"Validating training file: {training_file}")
        self.store.update_job(job_id, {"status": str(S.QUEUED), "queued_at": time.time()},
                              only_if_status=(S.VALIDATING_FILES,))
        self.add_event(job_id, "Files validated, moving job to queued state")
        return self.get_job(job_id)

    def _transition(self, job_id: str, allowed: tuple[RunStatus, ...], to: RunStatus, action: str,
                    values: dict[str, Any], message: str) -> TrainingJob:
        for _ in range(5):  # the status may change between the read and the conditional update
            job = self.get_job(job_id)
            if job.status not in allowed:
                raise Conflict(f"cannot {action} job {job_id}: it is {wire_status(job.status)}; "
                               f"{action} applies to {', '.join(wire_status(s) for s in allowed)} jobs")
            if self.store.update_job(job_id, {"status": str(to), **values}, only_if_status=(job.status,)):
                self.add_event(job_id, message)
                return self.get_job(job_id)
        raise Conflict(f"cannot {action} job {job_id}: its status keeps changing; try again")
