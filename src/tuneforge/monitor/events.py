"""``events.jsonl``: one JSON object per line, the single source of truth about a run's progress.

Every event has ``seq`` (0, 1, 2 ...), ``time`` (unix seconds) and ``type``:

- the run: ``run.started`` (with ``pid``, ``resume``), ``data.prepared``, ``model.ready``, ``model.saved``,
  ``run.finished`` (``status``: succeeded, failed, interrupted, cancelled);
- training: ``train.started``, ``train.step`` (loss, grad_norm, learning_rate, tokens/s, memory),
  ``eval.result``, ``train.early_stopped``, ``train.best_selected``, ``train.interrupted``;
- health: ``issue.detected`` (kind, severity, step, message, suggestion, action, evidence),
  ``train.rollback``, ``train.rollback_refused``;
- checkpoints: ``checkpoint.saved``, ``checkpoint.skipped`` (corrupt, with the problems),
  ``checkpoint.cleaned`` (a half-written one removed), ``train.resumed``.

After a resume or a rollback, steps are trained again and their events written again: the last
event of a step is the one that counts. Lines are flushed as they are written so another process
can follow a running run (``tuneforge monitor``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep them visible as "nan"/"inf"
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


class EventWriter:
    """Appends events to ``path``. Continues the sequence numbers of an existing file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._seq = sum(1 for _ in read_events(path)) if path.exists() else 0
        self._handle = open(path, "a", encoding="utf-8")

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Write one event and return it."""
        event = {"seq": self._seq, "time": round(time.time(), 3), "type": type_, **_json_safe(fields)}
        self._handle.write(json.dumps(event) + "\n")
        self._handle.flush()
        self._seq += 1
        return event

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DiscardedEvents:
    """An ``EventWriter`` that writes nothing: the processes of a distributed run other than rank 0 (only it writes)."""

    def __init__(self) -> None:
        self._seq = 0

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Return the event ``EventWriter.emit`` would have written."""
        event = {"seq": self._seq, "time": round(time.time(), 3), "type": type_, **_json_safe(fields)}
        self._seq += 1
        return event

    def close(self) -> None:
        pass


def read_events(path: Path, after: int = -1) -> Iterator[dict[str, Any]]:
    """Yield the events of ``path`` with ``seq > after``; a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:  # a damaged line is skipped, not fatal
        for line in handle:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("seq", -1) > after:
                yield event
