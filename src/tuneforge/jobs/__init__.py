"""Jobs: fine-tuning jobs in a store, run by workers, with OpenAI's fine-tuning API semantics.

The public API (``from tuneforge.jobs import ...``):

- ``FineTuningManager`` (manager.py): files, jobs, events, checkpoints, models; what the CLI and the server call.
  Its parts: requests.py (a job request checked), transitions.py (job states, cancel/pause/resume),
  progress.py (progress, events, checkpoints), models.py (the models a store serves).
- ``Worker`` (worker.py): claims queued jobs and trains each in its own process, with heartbeats and recovery.
- ``TrainingJob``, ``TrainingStatus``, ``StoredFile``, ``Page`` (objects.py): what it returns; ``to_openai()`` gives the wire dict.
- ``NotFound``, ``InvalidRequest``, ``Conflict``, ``PayloadTooLarge`` (errors.py): with ``http_status``, ``param``, ``code``.
- ``JobStore`` (store.py): the SQLAlchemy Core tables (SQLite by default, PostgreSQL for several machines).
"""

from __future__ import annotations

from tuneforge.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "FineTuningManager": "tuneforge.jobs.manager", "ResolvedModel": "tuneforge.jobs.manager",
    "Worker": "tuneforge.jobs.worker",
    "TrainingJob": "tuneforge.jobs.objects", "TrainingStatus": "tuneforge.jobs.objects",
    "StoredFile": "tuneforge.jobs.objects", "Page": "tuneforge.jobs.objects", "wire_status": "tuneforge.jobs.objects",
    "JobsError": "tuneforge.jobs.errors", "NotFound": "tuneforge.jobs.errors", "InvalidRequest": "tuneforge.jobs.errors",
    "Conflict": "tuneforge.jobs.errors", "PayloadTooLarge": "tuneforge.jobs.errors",
    "JobStore": "tuneforge.jobs.store", "FileStore": "tuneforge.jobs.files",
})
