"""The server's thin adapter over ``tuneforge.jobs``: opening the manager and running a worker beside the HTTP server.

``tuneforge serve`` trains in the same process as it serves: a ``Worker`` runs in a background
thread (each job still trains in its own process, as the worker does it), and stops with the server.
"""

from __future__ import annotations

from typing import Any

from tuneforge.server.settings import ServerSettings


def open_manager(settings: ServerSettings) -> Any:
    """A ``FineTuningManager`` over ``settings.database_url`` (default: SQLite in the home) and its home."""
    from tuneforge.jobs import FineTuningManager

    return FineTuningManager(database_url=settings.database_url, home=settings.home_dir,
                             max_upload_bytes=settings.max_upload_bytes)


def start_worker(manager: Any, settings: ServerSettings) -> Any:
    """A ``Worker`` over ``manager`` running in its own thread (``Worker.start``)."""
    from tuneforge.jobs import Worker

    worker = Worker(manager)
    worker.start()
    return worker


def stop_worker(worker: Any) -> None:
    """Stop the worker gracefully: its job processes save a checkpoint and are queued again for the next start."""
    worker.stop(wait=True)
