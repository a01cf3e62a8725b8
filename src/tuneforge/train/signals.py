"""Graceful stop: on SIGINT / SIGTERM, or asked by code holding the run, finish the step, save a checkpoint, leave.

Two ways to ask, one behaviour:

- a signal: the handler only records it (no I/O in a signal handler);
- ``request(reason)``, from any thread (a job runner, a search pruner, an event callback): also
  only records it, with the reason.

While the training loop runs (inside ``deferring()``), the loop sees the request at the next
optimizer-step boundary, writes a checkpoint and returns; the run ends ``interrupted`` and
``tuneforge resume`` continues it exactly. A request made before training starts stops it before
its first step. A second signal, or a first one outside the loop, raises ``KeyboardInterrupt`` at
once; a checkpoint being written then is abandoned and the previous one stays in use. A request by
code never raises: after the last step there is nothing left to stop, and the run finishes.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """The stop request of one run. ``handle_signals``: install SIGINT/SIGTERM handlers on ``__enter__``
    (main thread only) and restore the previous ones on exit."""

    def __init__(self, handle_signals: bool = True) -> None:
        self.handle_signals = handle_signals
        self.signal_name: str | None = None  # the signal that asked, e.g. "SIGTERM" (None: asked by code)
        self.reason: str | None = None  # why: the signal's name, or the text given to ``request``
        self._deferring = False
        self._acted = False
        self._lock = threading.Lock()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for and is waiting for the next step boundary."""
        return self.reason is not None

    def request(self, reason: str) -> bool:
        """Ask the run to stop at the next step boundary (thread-safe). The first reason wins; returns whether this was it."""
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = str(reason) or "stop requested"
            return True

    def __enter__(self) -> GracefulStop:
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def acknowledge(self) -> None:
        """The loop has acted on the request (it saved a checkpoint and is returning)."""
        self._acted = True

    @contextmanager
    def deferring(self) -> Iterator[GracefulStop]:
        """While inside, a first signal waits for the loop; a signal the loop did not act on stops at the exit."""
        self._deferring, self._acted = True, False
        try:
            yield self
        finally:
            self._deferring = False
        if self.signal_name is not None and not self._acted:
            raise KeyboardInterrupt(self.signal_name)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._deferring and self.reason is None:
            # No lock here: a handler that waited on a lock its own thread holds would deadlock. A request
            # racing this line loses nothing: either reason is a stop at the same step boundary.
            self.signal_name, self.reason = name, name
            return
        raise KeyboardInterrupt(name)
