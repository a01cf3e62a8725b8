"""The server's thin adapter over ``tuneforge.jobs``: opening the manager and running a worker beside the HTTP server.

``tuneforge serve`` trains in the same process as it serves: a ``Worker`` runs in a background
thread (each job still trains in its own process, as the worker does it), and stops with the server.
"""

from __future__ import annotations

import threading
from typing import Any

from tuneforge.server.settings import ServerSettings


def open_manager(settings: ServerSettings) -> Any:
    """A ``FineTuningManager`` over ``settings.database_url`` (default: SQLite in the home) and its home."""
    from tuneforge.jobs import FineTuningManager

    return FineTuningManager(database_url=settings.database_url, home=settings.home_dir,
                             max_upload_bytes=settings.max_upload_bytes)


class BackgroundWorker:
    """A jobs ``Worker`` running in a daemon thread until ``stop()``."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, name="tuneforge-worker", daemon=True)

    def start(self) -> BackgroundWorker:
        self.thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        self.worker.stop()
        self.thread.join(timeout=timeout)


def start_worker(manager: Any, settings: ServerSettings) -> BackgroundWorker:
    from tuneforge.jobs import Worker

    return BackgroundWorker(Worker(manager)).start()


def stop_worker(worker: BackgroundWorker) -> None:
    worker.stop()
