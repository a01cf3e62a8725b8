"""Graceful stop on SIGINT / SIGTERM: finish the step, save a checkpoint, leave.

The handler only records the signal (no I/O in a signal handler). While the training loop runs
(inside ``deferring()``), the loop sees the request at the next optimizer-step boundary, writes a
checkpoint and returns. A second signal, or a first one outside the loop, raises
``KeyboardInterrupt`` at once; a checkpoint being written then is abandoned and the previous one
stays in use.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Installs the handlers on ``__enter__`` (main thread only) and restores the previous ones on exit."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._deferring = False
        self._acted = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for and is waiting for the next step boundary."""
        return self.signal_name is not None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
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
        """While inside, a first signal waits for the loop; one the loop did not act on stops at the exit."""
        self._deferring, self._acted = True, False
        try:
            yield self
        finally:
            self._deferring = False
        if self.signal_name is not None and not self._acted:
            raise KeyboardInterrupt(self.signal_name)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._deferring and self.signal_name is None:
            self.signal_name = name
            return
        raise KeyboardInterrupt(name)
