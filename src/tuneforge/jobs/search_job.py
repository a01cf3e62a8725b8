"""A search job's process: ``run_job`` hands a job whose ``method.type`` is ``search`` to ``run_search_job``.

The search runs in the job's run directory with the job id as the study name, so running the job
again (resume after a pause, a retry after its process was killed) continues the same study: the
trial a signal stopped resumes from its checkpoint. Each trial becomes a job event; the job
succeeds when the study has its trials, with the best trial and ``best_config.yaml`` in its events
and ``trials.json`` as its result file path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tuneforge.core.errors import TuneforgeError
from tuneforge.core.status import RunStatus
from tuneforge.jobs.manager import FineTuningManager
from tuneforge.jobs.objects import TrainingJob
from tuneforge.jobs.run_job import _record_failure, _record_stopped

logger = logging.getLogger(__name__)


class SearchRecorder:
    """``run_search``'s ``on_event``: one job event per trial started, finished, pruned or retried. Never raises."""

    def __init__(self, manager: FineTuningManager, job: TrainingJob) -> None:
        self.manager, self.job = manager, job

    def __call__(self, event: dict[str, Any]) -> None:
        message = _message(event)
        if message is None:
            return
        try:
            self.manager.add_event(self.job.id, message, level="warn" if event["type"] == "search.trial_retried" else "info")
        except Exception as error:  # noqa: BLE001 - a briefly unreachable store must not stop the search
            logger.warning("could not record %s for %s: %s", event.get("type"), self.job.id, error)


def _message(event: dict[str, Any]) -> str | None:
    kind = event.get("type")
    if kind == "search.trial_started":
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in event["params"].items())
        return f"Trial {event['trial']} started{' (resuming its run)' if event.get('resume') else ''}: {params}"
    if kind == "search.trial_finished":
        return f"Trial {event['trial']} finished: {event['value']:.4g} in {event['seconds']:.0f} s"
    if kind == "search.trial_pruned":
        return f"Trial {event['trial']} {event['reason']}"
    if kind == "search.trial_retried":
        return f"Trial {event['trial']} was left running by a process that is gone; it is tried again"
    return None


def run_search_job(manager: FineTuningManager, job: TrainingJob) -> int:
    """Run (or continue) the search of ``job`` and record the outcome; 0."""
    from tuneforge.core.failures import describe_failure
    from tuneforge.search.run import run_search
    from tuneforge.search.space import SearchSpec

    spec = SearchSpec.from_dict(job.method["search"]["spec"])
    manager.add_event(job.id, "Search continued" if (job.run_dir / "study.db").is_file() else "Search started")
    try:
        result = run_search(spec, output=job.run_dir, name=job.id, on_event=SearchRecorder(manager, job))
    except KeyboardInterrupt as stop:
        return _record_stopped(manager, job, f"stopped at once by {stop or 'a signal'}")
    except TuneforgeError as error:
        return _record_failure(manager, job, "search_failed", str(error))
    except Exception as error:  # noqa: BLE001
        return _record_failure(manager, job, "internal_error", describe_failure(error, "the search"))
    if result.status == RunStatus.INTERRUPTED:
        return _record_stopped(manager, job, result.message or "stopped")
    if result.best is None:
        return _record_failure(manager, job, "search_failed", "no trial finished; see the trials' run directories")
    best = result.best
    manager.store.update_job(job.id, {"status": str(RunStatus.SUCCEEDED), "finished_at": time.time(), "error": None,
                                      "estimated_finish": None}, only_if_status=(RunStatus.RUNNING,))
    manager.add_event(job.id, f"Best trial {best['number']}: {result.objective} {best['value']:.4g}; "
                              f"best config {result.best_config}; report {result.report}")
    manager.add_event(job.id, "The search has successfully completed")
    return 0
