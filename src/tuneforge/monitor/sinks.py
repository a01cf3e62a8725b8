"""Metric sinks: copies of the event stream for other tools (``report_to``). ``events.jsonl`` stays the source of truth.

Each sink is a ``SinkSpec`` in the ``SINKS`` registry: the module it needs, how to install that,
and a factory ``open(run_dir) -> MetricSink``. Only trackers that write local files are built
in; nothing here opens a network connection. ``tensorboard`` writes ``RUN_DIR/tensorboard/``
(``pip install 'tuneforge[tensorboard]'``). A user sink is a ``SinkSpec`` named as
``report_to: my_module:my_sink`` or registered in ``SINKS`` (docs/SEAMS.md).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from tuneforge.core.errors import ConfigError
from tuneforge.core.registries import SINKS


class MetricSink(Protocol):
    def on_event(self, event: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class SinkSpec:
    """A metric sink: ``open(run_dir)`` makes one per run; ``requires`` must be importable first."""

    open: Callable[[Path], MetricSink]
    requires: str | None = None  # a module the sink needs (checked before the run starts)
    install: str = ""  # how to get ``requires``

    def missing(self) -> str | None:
        """Why the sink cannot run here (its module is not installed), or None."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"it needs {self.requires!r}; install it with: {self.install or 'pip install ' + self.requires}"
        return None


def _check_sink(name: str, entry: Any) -> SinkSpec:
    if not isinstance(entry, SinkSpec):
        raise TypeError(f"expected a tuneforge.monitor.sinks.SinkSpec, got {type(entry).__name__}")
    return entry


SINKS.set_check(_check_sink)


def _tensorboard(run_dir: Path) -> MetricSink:
    from tuneforge.monitor.tensorboard import TensorBoardSink

    return TensorBoardSink(run_dir / "tensorboard")


SINKS.register("tensorboard", SinkSpec(_tensorboard, requires="tensorboard", install="pip install 'tuneforge[tensorboard]'"))


def check_sinks(names: Sequence[str]) -> None:
    """Raise ``ConfigError`` naming every requested tracker that is unknown or not installed."""
    problems = []
    for name in names:
        problem = SINKS.problem(name, "report_to")
        if problem is None and (missing := SINKS.get(name).missing()):
            problem = f"report_to: {name} cannot be used: {missing}"
        if problem:
            problems.append(problem)
    if problems:
        raise ConfigError(problems)


def open_sinks(names: Sequence[str], run_dir: Path) -> list[MetricSink]:
    return [SINKS.get(name).open(run_dir) for name in names]
