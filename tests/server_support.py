"""Helpers of the server tests: a live uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

API_KEY = "sk-test-0123456789abcdef"


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yields the base URL (``http://127.0.0.1:PORT/v1``)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def live_server_with_worker(model_dir: Any, home: Any) -> Iterator[tuple[str, Any]]:
    """A live server for ``model_dir`` with a job worker on the same ``home``; yields (base URL, manager)."""
    from tuneforge.jobs import FineTuningManager, Worker
    from tuneforge.server import ServerSettings, create_app

    manager = FineTuningManager(home=home)
    worker = Worker(manager, poll_seconds=0.2)
    worker.start()
    app = create_app(ServerSettings(models=[str(model_dir)], home=home), manager=manager, api_key=API_KEY)
    try:
        with live_server(app) as url:
            yield url, manager
    finally:
        worker.stop(wait=True, timeout=60)
