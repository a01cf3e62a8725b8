"""``serve(settings)``: the API key, the job manager and its worker, the app, uvicorn — in one process."""

from __future__ import annotations

import logging
from typing import Any

from tuneforge.server.settings import ServerSettings, resolve_api_key

log = logging.getLogger("tuneforge.server")


def build_manager(settings: ServerSettings) -> Any:
    """The ``FineTuningManager`` over the job store the settings name (SQLite in the home by default)."""
    from tuneforge.server.jobs_adapter import open_manager

    return open_manager(settings)


def serve(settings: ServerSettings) -> None:
    """Run the server until interrupted. Raises ``ServerConfigError`` before binding anything if unsafe."""
    import uvicorn

    from tuneforge.server.app import create_app

    key = resolve_api_key(settings)  # first: refuse a public bind before anything is loaded
    manager = build_manager(settings)
    worker = None
    if settings.worker:
        from tuneforge.server.jobs_adapter import start_worker

        worker = start_worker(manager, settings)
    app = create_app(settings, manager=manager, api_key=key)
    print(f"tuneforge serving {', '.join(app.state.tuneforge.models)} on http://{settings.host}:{settings.port}/v1 "
          f"({'with' if worker else 'without'} a job worker); stop with Ctrl-C", flush=True)
    if settings.dashboard:
        print(f"dashboard: http://{settings.host}:{settings.port}/ (log in with the API key)", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                      lifespan="on", server_header=False)).run()
    finally:
        if worker is not None:
            from tuneforge.server.jobs_adapter import stop_worker

            stop_worker(worker)
