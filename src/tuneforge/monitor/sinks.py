"""Metric sinks: copies of the event stream for other tools (``report_to``). ``events.jsonl`` stays the source of truth.

Only trackers that write local files and are installed are offered; nothing here opens a network
connection. ``tensorboard`` writes ``RUN_DIR/tensorboard/`` (``pip install 'tuneforge[tensorboard]'``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from tuneforge.core.errors import ConfigError


class MetricSink(Protocol):
    def on_event(self, event: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def _tensorboard(run_dir: Path) -> MetricSink:
    from tuneforge.monitor.tensorboard import TensorBoardSink

    return TensorBoardSink(run_dir / "tensorboard")


# name -> (module that must be importable, how to install it, factory)
SINKS: dict[str, tuple[str, str, Callable[[Path], MetricSink]]] = {
    "tensorboard": ("tensorboard", "pip install 'tuneforge[tensorboard]'", _tensorboard),
}


def check_sinks(names: Sequence[str]) -> None:
    """Raise ``ConfigError`` naming every requested tracker that is unknown or not installed."""
    problems = []
    for name in names:
        if name not in SINKS:
            problems.append(f"report_to: unknown tracker {name!r}; choose from {', '.join(SINKS)}")
        elif importlib.util.find_spec(SINKS[name][0]) is None:
            problems.append(f"report_to: {name} is not installed; install it with: {SINKS[name][1]}")
    if problems:
        raise ConfigError(problems)


def open_sinks(names: Sequence[str], run_dir: Path) -> list[MetricSink]:
    return [SINKS[name][2](run_dir) for name in names]
