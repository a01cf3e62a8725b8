"""What the dashboard's pages show, read from a job's run directory with the library's own readers.

Each function takes library objects (a ``TrainingJob``, the events of ``events.jsonl``, ``results.json``)
and returns plain JSON-ready dicts; nothing is computed here that the library does not already
define: curves are the events' own fields (one per step, the last written, as ``report.latest_by_step``
keeps them), the timeline's words are ``report.TIMELINE``'s, an answer's correctness is
``evaluate.compare.example_correct``'s, the metrics table is ``evaluate.compare.compare_models``'.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tuneforge.core.paths import read_json_object
from tuneforge.monitor.events import read_events
from tuneforge.report import TIMELINE, latest_by_step

# (curve name, event type, field): what the job page and Compare draw
CURVE_FIELDS = (
    ("loss", "train.step", "loss"), ("validation_loss", "eval.result", "validation_loss"),
    ("learning_rate", "train.step", "learning_rate"), ("tokens_per_second", "train.step", "tokens_per_second"),
    ("step_tokens_per_second", "train.step", "step_tokens_per_second"), ("memory_mb", "train.step", "memory_mb"),
    ("gpu_memory_mb", "train.step", "gpu_memory_mb"), ("grad_norm", "train.step", "grad_norm"),
)
LIVE_TYPES = {"train.started", "train.step", "eval.result", "issue.detected", *TIMELINE}


def events_of(run_dir: Path, after: int = -1) -> list[dict[str, Any]]:
    return list(read_events(Path(run_dir) / "events.jsonl", after))


def curves(events: Sequence[Mapping[str, Any]]) -> dict[str, list[list[float]]]:
    """``{curve: [[step, value], ...]}`` for every curve of ``CURVE_FIELDS`` the events have."""
    found: dict[str, list[list[float]]] = {}
    for name, kind, key in CURVE_FIELDS:
        rows = latest_by_step([e for e in events if e.get("type") == kind and _finite(e.get(key))])
        if rows:
            found[name] = [[float(e.get("step", 0)), float(e[key])] for e in rows]
    return found


def timeline(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Issues (with what happened and what to try) and the run's milestones, in the order they happened."""
    rows = []
    for event in events:
        kind = event.get("type")
        if kind == "issue.detected":
            rows.append({"step": event.get("step"), "kind": "issue", "severity": event.get("severity"),
                         "title": event.get("kind"), "text": event.get("message"), "explanation": event.get("suggestion"),
                         "action": event.get("action")})
        elif kind in TIMELINE:
            try:
                text = TIMELINE[kind](event)
            except (KeyError, TypeError):
                text = kind
            rows.append({"step": event.get("step"), "kind": "event", "severity": "info", "title": kind, "text": text})
    return rows


def live_event(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The part of one event the job page draws as it arrives (None for events it does not show)."""
    kind = event.get("type")
    if kind not in LIVE_TYPES:
        return None
    points = {name: [float(event.get("step", 0)), float(event[key])] for name, event_kind, key in CURVE_FIELDS
              if event_kind == kind and _finite(event.get(key))}
    shown = timeline([event])
    return {"seq": event.get("seq"), "type": kind, "step": event.get("step"), "total_steps": event.get("total_steps"),
            "points": points, "timeline": shown[0] if shown else None}


def best_validation_loss(events: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> float | None:
    recorded = (results.get("train") or {}).get("best_validation_loss")
    if _finite(recorded):
        return float(recorded)
    losses = [float(e["validation_loss"]) for e in events if e.get("type") == "eval.result" and _finite(e.get("validation_loss"))]
    return min(losses) if losses else None


def results_of(run_dir: Path) -> dict[str, Any]:
    """``results.json`` of a finished run, or ``{}`` while it has none."""
    path = Path(run_dir) / "results.json"
    return read_json_object(path, "the run rewrites results.json when it finishes") if path.is_file() else {}


def predictions(run_dir: Path, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The test answers of ``predictions.jsonl``, each marked fixed / broken / still wrong / right (tuned vs base)."""
    from tuneforge.evaluate.compare import example_correct

    path = Path(run_dir) / "predictions.jsonl"
    if not path.is_file():
        return []
    rows = [row for row in _jsonl(path)]
    analysis = results.get("error_analysis") or {}
    task = analysis.get("task") or "generation"
    labels = (analysis.get("confusion") or {}).get("labels")
    tuned = example_correct([{"reference": r.get("reference"), "prediction": r.get("tuned")} for r in rows], task, labels)
    with_base = all(r.get("base") is not None for r in rows)
    base = (example_correct([{"reference": r.get("reference"), "prediction": r.get("base")} for r in rows], task, labels)
            if with_base else [None] * len(rows))
    for row, t, b in zip(rows, tuned, base):
        row["outcome"] = ("fixed" if t and b is False else "broken" if b and not t else
                          "still wrong" if not t else "right")
    return rows


def performances(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{"base": ..., <baseline>: ..., "tuned": ...}``: the test scores of ``results.json``, in the order shown."""
    found = {"base": dict(results.get("base") or {})}
    for name, baseline in (results.get("baselines") or {}).items():
        found[name] = dict((baseline or {}).get("performance") or {})
    found["tuned"] = dict(results.get("tuned") or {})
    return {name: scores for name, scores in found.items() if scores}


def compare_table(performances: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    from tuneforge.evaluate.compare import compare_models

    return compare_models({name: dict(p) for name, p in performances.items() if p})


def _jsonl(path: Path) -> Iterable[dict[str, Any]]:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            yield row


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
