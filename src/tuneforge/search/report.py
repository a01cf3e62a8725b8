"""``search.html``: one self-contained page about a search, drawn with the run report's SVG charts.

The optimisation history (each finished trial's objective and the best so far), the parameter
importances (``optuna.importance.get_param_importances``: fANOVA over the complete trials), every
trial's curve (the metric it reported at each evaluation, pruned ones included), the trials table
with links to each trial's own ``report.html``, and the best trial on the test split.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tuneforge.core.paths import atomic_write_text
from tuneforge.report import STYLE, line_chart

COLOURS = ["#2563eb", "#d97706", "#137a3a", "#b42318", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f", "#92400e", "#334155"]
MAX_CURVES = 30  # trials drawn in the curves chart (the best ones first); the table lists all


def parameter_importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances over the complete trials; {} while there are too few to say."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {name: float(value) for name, value in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # a parameter with one value only, identical objectives
        return {}


def write_search_report(study: Any, spec: Any, result: Any, path: Path) -> Path:
    """Write ``path`` (search.html) from the study and the search result; returns the path."""
    atomic_write_text(path, build_search_report(study, spec, result, path.parent))
    return path


def build_search_report(study: Any, spec: Any, result: Any, search_dir: Path) -> str:
    rows = result.trials
    finished = [row for row in rows if row["state"] == "COMPLETE"]  # a pruned trial's value is only its last report
    sections = [f"<h1>Search {html.escape(result.study_name)}</h1>", _cards(spec, result),
                "<h2>Optimisation history</h2>" + (_history(finished, spec.direction) or "<p class=muted>no complete trial yet</p>"),
                "<h2>Parameter importances</h2>" + _importances(result.importances),
                "<h2>Trial curves</h2>" + (_curves(study, spec, rows) or "<p class=muted>no evaluation reported yet</p>"),
                "<h2>Trials</h2>" + _table(rows, search_dir),
                "<h2>Best trial on the test split</h2>" + _test(result.test),
                "<h2>Search</h2><pre>" + html.escape(json.dumps(spec.to_dict(), indent=2, default=str)) + "</pre>"]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tuneforge search "
            f"{html.escape(result.study_name)}</title><style>{STYLE}</style></head><body>" + "".join(sections) + "</body></html>")


def _cards(spec: Any, result: Any) -> str:
    counts: dict[str, int] = {}
    for row in result.trials:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    best = result.best
    cards = [("objective", f"{spec.objective} ({spec.direction})"), ("strategy", spec.strategy),
             ("pruner", spec.pruner.get("type")), ("trials", ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) or "0"),
             ("best", f"{best['value']:.4g} (trial {best['number']})" if best else "—"), ("storage", result.storage)]
    return "<div class=cards>" + "".join(f"<div class=card>{html.escape(k)}<b>{html.escape(str(v))}</b></div>"
                                         for k, v in cards) + "</div>"


def _history(finished: list[dict[str, Any]], direction: str) -> str:
    points = [(float(row["number"]), float(row["value"])) for row in sorted(finished, key=lambda r: r["number"])]
    best, best_points = None, []
    for x, y in points:
        if best is None or (y > best if direction == "maximize" else y < best):
            best = y
        best_points.append((x, best))
    return line_chart("objective of each complete trial", [("trial", "#2563eb", points), ("best so far", "#137a3a", best_points)],
                      x_label="trial", width=900)


def _importances(importances: dict[str, float]) -> str:
    if not importances:
        return "<p class=muted>needs at least two complete trials with different parameters</p>"
    width = 300
    bars = "".join(f"<tr><td>{html.escape(name)}</td><td>{value:.3f}</td><td style='text-align:left'><svg width='{width}' "
                   f"height='12'><rect width='{max(1, value * width):.0f}' height='12' fill='#2563eb'/></svg></td></tr>"
                   for name, value in sorted(importances.items(), key=lambda item: -item[1]))
    return f"<table><tr><th>parameter</th><th>importance</th><th></th></tr>{bars}</table>"


def _curves(study: Any, spec: Any, rows: list[dict[str, Any]]) -> str:
    from tuneforge.search.trial import pruning_metric

    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    reported = [row for row in rows if trials[row["number"]].intermediate_values]
    reverse = spec.direction == "maximize"
    reported.sort(key=lambda row: (row["value"] is None, -(row["value"] or 0) if reverse else (row["value"] or 0)))
    series = []
    for index, row in enumerate(reported[:MAX_CURVES]):
        values = trials[row["number"]].intermediate_values
        label = f"#{row['number']} {row['state'].lower()}"
        series.append((label, COLOURS[index % len(COLOURS)], [(float(step), float(values[step])) for step in sorted(values)]))
    return line_chart(f"{pruning_metric(spec)} at each evaluation", series, width=900, height=320)


def _table(rows: list[dict[str, Any]], search_dir: Path) -> str:
    names = sorted({name for row in rows for name in row["params"]})
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", "state", *names, "objective", "seconds", "run"])
    body = []
    for row in rows:
        run = row.get("run_dir") or ""
        link = ""
        if run and (Path(run) / "report.html").is_file():
            try:
                target = (Path(run) / "report.html").relative_to(search_dir)
            except ValueError:
                target = Path(run) / "report.html"
            link = f"<a href='{html.escape(str(target))}'>{html.escape(Path(run).name)}</a>"
        cells = [str(row["number"]), row["state"].lower(), *[_fmt(row["params"].get(n)) for n in names],
                 _fmt(row["value"]), _fmt(row["seconds"])]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + f"<td>{link}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _test(test: dict[str, Any] | None) -> str:
    if not test:
        return "<p class=muted>no test split, or no complete trial yet</p>"
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in test["performance"].items())
    return (f"<p>trial {test['trial']} ({html.escape(str(test['params']))}) on {test['examples']} test examples</p>"
            f"<table>{cells}</table>")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)
