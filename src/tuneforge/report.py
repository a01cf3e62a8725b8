"""``report.html``: a self-contained page about a run, built from ``events.jsonl`` and ``results.json``.

Inline SVG charts (training and validation loss, learning rate, gradient norm, throughput, memory)
with the detected issues, resumes and rollbacks marked on the step axis; the issues table; the
timeline of checkpoints and stops; base vs tuned; the data summary and the config. One small inline
script adds a hover read-out; without it the page is complete. Nothing is loaded from anywhere.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Sequence

from tuneforge.core.errors import CheckpointError
from tuneforge.core.paths import atomic_write_text, read_json_object
from tuneforge.core.status import RunStatus
from tuneforge.monitor.events import read_events

Series = tuple[str, str, Sequence[tuple[float, float]]]  # (label, colour, points)
Marker = tuple[float, str, str]  # (step, colour, tooltip)

MAX_POINTS = 600  # per series drawn; longer runs are thinned evenly (first and last kept)
SEVERITY_COLOUR = {"error": "#b42318", "warning": "#d97706", "info": "#2563eb"}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1000px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.3rem .8rem;border-bottom:1px solid #eef;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}.better{color:#137a3a;font-weight:600}.worse{color:#b42318}
.text td,.text th{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:1rem}.chart{border:1px solid #e3e6ee;border-radius:6px;padding:.5rem;position:relative}
.muted{color:#667}pre{background:#f6f7fb;padding:.8rem;overflow:auto;font-size:.85rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{border:1px solid #e3e6ee;border-radius:6px;padding:.5rem .9rem;min-width:120px}
.card b{display:block;font-size:1.15rem}.sev-error{color:#b42318;font-weight:600}.sev-warning{color:#b45309;font-weight:600}
.sev-info{color:#2563eb;font-weight:600}.readout{position:absolute;top:.4rem;right:.6rem;font-size:11px;color:#334;background:#fffc}
.status-succeeded{color:#137a3a}.status-failed{color:#b42318}.status-interrupted,.status-cancelled{color:#b45309}
"""

# Hover read-out: the nearest step's values of every series in the chart. Progressive enhancement only.
SCRIPT = """
document.querySelectorAll('svg[data-series]').forEach(function (svg) {
  var series = JSON.parse(svg.getAttribute('data-series'));
  var frame = JSON.parse(svg.getAttribute('data-frame'));
  var readout = svg.parentNode.querySelector('.readout');
  var cursor = svg.querySelector('.cursor');
  svg.addEventListener('mousemove', function (event) {
    var box = svg.getBoundingClientRect();
    var x = (event.clientX - box.left) * (frame.width / box.width);
    if (x < frame.left || x > frame.width - frame.right) { return; }
    var step = frame.x0 + (x - frame.left) / (frame.width - frame.left - frame.right) * (frame.x1 - frame.x0);
    var parts = [];
    series.forEach(function (s) {
      var best = null;
      s.points.forEach(function (p) { if (best === null || Math.abs(p[0] - step) < Math.abs(best[0] - step)) { best = p; } });
      if (best !== null) { parts.push(s.label + ' ' + Number(best[1]).toPrecision(4) + ' @' + best[0]); }
    });
    readout.textContent = parts.join('   ');
    cursor.setAttribute('x1', x); cursor.setAttribute('x2', x); cursor.setAttribute('visibility', 'visible');
  });
  svg.addEventListener('mouseleave', function () { cursor.setAttribute('visibility', 'hidden'); readout.textContent = ''; });
});
"""


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    stride = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * stride)] for i in range(MAX_POINTS)]


def line_chart(title: str, series: Sequence[Series], markers: Sequence[Marker] = (), x_label: str = "step",
               width: int = 450, height: int = 250, log_y: bool = False) -> str:
    """An SVG line chart of one or more series, with vertical markers (issues, resumes) and axis ticks."""
    drawn = [(label, colour, _thin([p for p in pts if math.isfinite(p[1]) and (p[1] > 0 or not log_y)])) for label, colour, pts in series]
    points = [p for _, _, pts in drawn for p in pts]
    if not points:
        return ""
    left, right, top, bottom = 58, 14, 30, 36
    xs = [p[0] for p in points] + [m[0] for m in markers]
    ys = [math.log10(p[1]) if log_y else p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1, clipped = _y_range(ys)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        value = min(math.log10(y) if log_y else y, y1)  # an outlier above the range is drawn at the top edge
        return height - bottom - (value - y0) / (y1 - y0) * (height - top - bottom)

    frame = {"left": left, "right": right, "width": width, "x0": x0, "x1": x1}
    data = [{"label": label, "points": [[x, y] for x, y in pts]} for label, _, pts in drawn if pts]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{html.escape(title)}" data-series="{html.escape(json.dumps(data))}" '
             f'data-frame="{html.escape(json.dumps(frame))}">',
             f'<text x="{left}" y="17" font-size="13" font-weight="600">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#99a"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#99a"/>']
    for fraction in (0.0, 0.5, 1.0):
        value = y0 + fraction * (y1 - y0)
        shown = 10 ** value if log_y else value
        y = height - bottom - fraction * (height - top - bottom)
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{shown:.3g}</text>')
    for value in (x0, (x0 + x1) / 2, x1):
        parts.append(f'<text x="{sx(value):.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">{value:.4g}</text>')
    parts.append(f'<text x="{(left + width) / 2:.0f}" y="{height - 4}" font-size="10" text-anchor="middle">{x_label}</text>')
    if clipped:
        parts.append(f'<text x="{width - right}" y="17" font-size="10" fill="#667" text-anchor="end">▲ {clipped} '
                     f'point(s) above the range, up to {10 ** max(ys) if log_y else max(ys):.4g}</text>')
    for step, colour, tooltip in markers:
        parts.append(f'<line class="marker" x1="{sx(step):.1f}" y1="{top}" x2="{sx(step):.1f}" y2="{height - bottom}" '
                     f'stroke="{colour}" stroke-width="1.2" stroke-dasharray="3,3"><title>{html.escape(tooltip)}</title></line>')
        parts.append(f'<circle cx="{sx(step):.1f}" cy="{top + 2}" r="3.5" fill="{colour}"><title>{html.escape(tooltip)}</title></circle>')
    for index, (label, colour, pts) in enumerate(drawn):
        if not pts:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="1.8" points="{path}"/>')
        if len(pts) <= 40:
            parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{colour}"><title>{html.escape(label)} '
                         f'{y:.4g} at step {x:g}</title></circle>' for x, y in pts)
        parts.append(f'<text x="{width - right - 4}" y="{top + 12 * index + 4}" font-size="11" fill="{colour}" '
                     f'text-anchor="end">{html.escape(label)}</text>')
    parts.append(f'<line class="cursor" x1="0" y1="{top}" x2="0" y2="{height - bottom}" stroke="#889" visibility="hidden"/>')
    parts.append("</svg>")
    return '<div class="chart"><span class="readout"></span>' + "".join(parts) + "</div>"


def _y_range(ys: Sequence[float]) -> tuple[float, float, int]:
    """(low, high, points above high): a few far outliers (a loss spike) must not flatten the rest of the curve."""
    low, high = min(ys), max(ys)
    ordered = sorted(ys)
    typical = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    clipped = 0
    if len(ys) >= 10 and high - low > 0 and high > typical + 3 * (typical - low):
        high = typical + 0.25 * (typical - low) if typical > low else typical + abs(typical) * 0.1 + 1e-12
        clipped = sum(1 for y in ys if y > high)
    if high <= low:  # a flat series: give it some room instead of a made-up unit range
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    return low, high, clipped


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return html.escape("—" if value is None else str(value))


def latest_by_step(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per step, the last one written: after a resume or a rollback the re-done steps replace the old."""
    by_step: dict[int, dict[str, Any]] = {}
    for event in events:
        by_step[int(event.get("step", 0))] = event
    return [by_step[step] for step in sorted(by_step)]


def _comparison_table(results: dict[str, Any]) -> str:
    base, tuned = results.get("base") or {}, results.get("tuned") or {}
    if not (base or tuned):
        return '<p class="muted">No test evaluation in this run.</p>'
    rows = ["<table><tr><th>metric</th><th>base</th><th>tuned</th><th>change</th></tr>"]
    for metric in sorted(set(base) | set(tuned), key=lambda m: (m not in ("accuracy", "f1_score"), m)):
        b, t = base.get(metric), tuned.get(metric)
        change, css = "", ""
        if isinstance(b, (int, float)) and isinstance(t, (int, float)):
            delta = t - b
            improved = delta < 0 if metric in ("loss", "perplexity") else delta > 0
            css = "better" if improved else "worse" if delta else ""
            change = f"{delta:+.4f}"
        rows.append(f"<tr><td>{html.escape(metric)}</td><td>{_fmt(b)}</td><td>{_fmt(t)}</td><td class='{css}'>{change}</td></tr>")
    return "".join(rows) + "</table>"


def _baselines_section(results: dict[str, Any]) -> str:
    """Was fine-tuning worth it: base, the prompting baselines and tuned side by side, with the verdict."""
    baselines = results.get("baselines") or {}
    if not baselines:
        return ""
    columns = [("base", "base zero-shot", results.get("base"), (results.get("evaluation") or {}).get("base"))]
    columns += [(name, b.get("label", name), b.get("performance"), b.get("resources")) for name, b in baselines.items()]
    columns.append(("tuned", "tuned", results.get("tuned"), (results.get("evaluation") or {}).get("tuned")))
    columns = [c for c in columns if c[2]]
    metrics = sorted({m for c in columns for m in c[2]}, key=lambda m: (m not in ("accuracy", "f1_score"), m))
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _, _ in columns)
    rows = [f"<table><tr><th>metric</th>{head}</tr>"]
    for metric in metrics:
        rows.append(f"<tr><td>{html.escape(metric)}</td>" + "".join(f"<td>{_fmt(c[2].get(metric))}</td>" for c in columns) + "</tr>")
    for key, label in (("prompt_tokens_per_request", "prompt tokens / request"), ("seconds_per_request", "seconds / request")):
        rows.append(f"<tr><td class='muted'>{label}</td>" + "".join(f"<td>{_fmt((c[3] or {}).get(key))}</td>" for c in columns) + "</tr>")
    verdict = results.get("verdict")
    shots = next(iter(baselines.values())).get("shots")
    text = (f"<p class='{'better' if verdict.get('worth_it') else 'worse'}'>{html.escape(verdict['message'])}</p>" if verdict else "")
    return (f"<h2>Was fine-tuning worth it?</h2>{text}<p class='muted'>The base model prompted with {shots} training examples: "
            "drawn once with the run's seed (few-shot), or the most similar to each test input by BM25 (retrieval few-shot); "
            "shots never come from the test split.</p>" + "".join(rows) + "</table>")


def _confusion_table(confusion: dict[str, Any]) -> str:
    columns = confusion["columns"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = [f"<table><tr><th>reference \\ answer</th>{head}<th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"]
    for label, counts in zip(confusion["labels"], confusion["matrix"]):
        stats = confusion["per_label"][label]
        cells = "".join(f"<td class='{'better' if column == label and n else 'worse' if n else 'muted'}'>{n}</td>"
                        for column, n in zip(columns, counts))
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}<td>{_fmt(stats['precision'])}</td><td>{_fmt(stats['recall'])}</td>"
                    f"<td>{_fmt(stats['f1'])}</td><td>{stats['support']}</td></tr>")
    return "".join(rows) + "</table>"


def _examples_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">None.</p>'
    with_base = "base" in rows[0]
    out = ["<table class='text'><tr><th>input</th><th>reference</th>" + ("<th>base</th>" if with_base else "") + "<th>tuned</th></tr>"]
    for row in rows:
        out.append(f"<tr><td>{html.escape(str(row['input']))}</td><td>{html.escape(str(row['reference']))}</td>"
                   + (f"<td>{html.escape(str(row.get('base')))}</td>" if with_base else "")
                   + f"<td>{html.escape(str(row['tuned']))}</td></tr>")
    return "".join(out) + "</table>"


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _hyperparameters_section(results: dict[str, Any]) -> str:
    """The values training used: chosen from the data (auto, with the reason) or given (train/auto.py)."""
    chosen = results.get("hyperparameters")
    if not chosen:
        return ""
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{html.escape(_plain(item.get('value')))}</td>"
                   f"<td>{'auto' if item.get('auto') else 'given'}</td>"
                   f"<td>{html.escape(str(item.get('reason', ''))) if item.get('auto') else ''}</td></tr>"
                   for name, item in chosen.items())
    return ("<h2>Hyperparameters</h2><table><tr><th>field</th><th>value</th><th></th><th>why</th></tr>"
            f"{rows}</table>")


def _forgetting_section(results: dict[str, Any]) -> str:
    found = results.get("forgetting")
    if not found:
        return ""
    return (f"<h2>Forgetting</h2><p class='{'worse' if found.get('forgot') else 'muted'}'>{html.escape(found['message'])}</p>"
            "<p class='muted'>Perplexity on 30 general English sentences shipped with tuneforge, before and after training.</p>")


def _error_analysis_section(results: dict[str, Any]) -> str:
    """The tuned model's confusion matrix and per-label figures, its mistakes, and what it fixed or broke."""
    found = results.get("error_analysis")
    if not found:
        return ""
    parts = ["<h2>Error analysis</h2>"]
    if found.get("confusion"):
        parts.append("<h3>Tuned model: confusion matrix and per-label precision / recall / F1</h3>" + _confusion_table(found["confusion"]))
    if found.get("base_confusion"):
        parts.append("<h3>Base model</h3>" + _confusion_table(found["base_confusion"]))
    shown = len(found.get("wrong") or [])
    parts.append(f"<h3>Wrong answers of the tuned model ({found['wrong_count']} of {found['examples']}"
                 f"{f', first {shown} shown' if shown < found['wrong_count'] else ''})</h3>" + _examples_table(found.get("wrong") or []))
    if "fixed_count" in found:
        parts.append(f"<h3>Fixed by fine-tuning ({found['fixed_count']}): the base was wrong, the tuned model is right</h3>"
                     + _examples_table(found.get("fixed") or []))
        parts.append(f"<h3>Broken by fine-tuning ({found['broke_count']}): the base was right, the tuned model is wrong</h3>"
                     + _examples_table(found.get("broke") or []))
    return "".join(parts)


def _markers(events: Sequence[dict[str, Any]]) -> list[Marker]:
    """Issues, resumes, rollbacks and early stops as (step, colour, tooltip) for the charts' step axis."""
    markers: list[Marker] = []
    for event in events:
        kind = event["type"]
        if kind == "issue.detected":
            markers.append((_number(event.get("step")), SEVERITY_COLOUR.get(str(event.get("severity")), "#b42318"),
                            f"step {event.get('step')}: {event.get('kind')} ({event.get('severity')}) — {event.get('message')}"))
        elif kind == "train.resumed" and event.get("step"):
            markers.append((_number(event["step"]), "#0f766e", f"resumed from step {event['step']}"))
        elif kind == "train.rollback":
            markers.append((_number(event.get("to_step")), "#7c3aed", str(event.get("message"))))
        elif kind in ("train.early_stopped", "train.interrupted"):
            markers.append((_number(event.get("step")), "#475569", f"{kind.split('.')[1].replace('_', ' ')} at step {event.get('step')}"))
    return [m for m in markers if math.isfinite(m[0])]


def _issues_table(issues: Sequence[dict[str, Any]]) -> str:
    if not issues:
        return '<p class="muted">None detected.</p>'
    rows = ["<table class='text' id='issues'><tr><th>step</th><th>severity</th><th>issue</th><th>action</th>"
            "<th>what happened</th><th>what to try</th></tr>"]
    for issue in issues:
        severity = html.escape(str(issue.get("severity")))
        rows.append(f"<tr><td>{_fmt(issue.get('step'))}</td><td class='sev-{severity}'>{severity}</td>"
                    f"<td>{_fmt(issue.get('kind'))}</td><td>{_fmt(issue.get('action'))}</td>"
                    f"<td>{_fmt(issue.get('message'))}</td><td>{_fmt(issue.get('suggestion'))}</td></tr>")
    return "".join(rows) + "</table>"


TIMELINE = {
    "run.started": lambda e: "resumed the run" if e.get("resume") else "run started",
    "train.resumed": lambda e: e.get("message"),
    "checkpoint.saved": lambda e: f"checkpoint {e.get('path')}" + (" (best so far)" if e.get("best") else ""),
    "checkpoint.skipped": lambda e: e.get("message"),
    "checkpoint.cleaned": lambda e: e.get("message"),
    "train.rollback": lambda e: e.get("message"),
    "train.rollback_refused": lambda e: e.get("message"),
    "train.early_stopped": lambda e: "early stopping: " + str(e.get("message")),
    "train.best_selected": lambda e: e.get("message"),
    "train.interrupted": lambda e: f"stopped by {e.get('signal')} after step {e.get('step')}",
    "run.finished": lambda e: f"run finished: {e.get('status')}" + (f" — {e.get('error')}" if e.get("error") else ""),
}


def _timeline(events: Sequence[dict[str, Any]]) -> str:
    rows = [f"<tr><td>{_fmt(e.get('step', ''))}</td><td>{html.escape(str(TIMELINE[e['type']](e)))}</td></tr>"
            for e in events if e["type"] in TIMELINE]
    return "<table class='text'><tr><th>step</th><th>event</th></tr>" + "".join(rows) + "</table>" if rows else ""


RESULTS_FIX = ("results.json is rewritten when the run finishes: `tuneforge resume` an unfinished run, or delete the "
               "damaged file and run `tuneforge report` again for what events.jsonl holds")


def _cross_validation_section(results: dict[str, Any]) -> str:
    """K folds: every metric's mean ± sample standard deviation for base and tuned, and each fold's figure."""
    found = results.get("cross_validation")
    if not found:
        return ""
    base, tuned = found.get("base") or {}, found.get("tuned") or {}
    folds = found.get("folds") or []
    links = "".join(f"<th><a href='fold-{f['fold']}/report.html'>fold {f['fold']}</a></th>" for f in folds)
    rows = [f"<table><tr><th>metric</th><th>base mean ± std</th><th>tuned mean ± std</th>{links}</tr>"]
    for metric in sorted(set(base) | set(tuned), key=lambda m: (m not in ("accuracy", "f1_score"), m)):
        cells = "".join(f"<td>{_fmt(s[metric]['mean'])} ± {_fmt(s[metric]['std'])}</td>" if metric in s else "<td>—</td>"
                        for s in (base, tuned))
        per_fold = (tuned.get(metric) or {}).get("folds") or []
        rows.append(f"<tr><td>{html.escape(metric)}</td>{cells}" + "".join(f"<td>{_fmt(v)}</td>" for v in per_fold) + "</tr>")
    return (f"<h2>{found['k']}-fold cross-validation</h2><p class='muted'>Each fold's examples were the test set of one run "
            "trained on the others (stratified by label for label tasks); the standard deviation is the sample one; "
            "the fold columns are the tuned model's figures.</p>" + "".join(rows) + "</table>")


def build_report(run_dir: Path) -> str:
    """The HTML page of a run, as a string.

    Raises ``CheckpointError`` naming the file when ``results.json`` or ``events.jsonl`` is damaged.
    """
    results_path = run_dir / "results.json"
    results = read_json_object(results_path, RESULTS_FIX) if results_path.is_file() else {"status": str(RunStatus.RUNNING)}
    events = list(read_events(run_dir / "events.jsonl"))
    try:
        return _page(run_dir, events, results, results_path.is_file())
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # a field of the wrong type or missing
        raise CheckpointError(
            f"the records of {run_dir} are damaged ({type(error).__name__}: {error}) in events.jsonl or results.json; "
            "check them for hand edits, or restore them from a copy"
        ) from None


def _lineage_section(results: dict[str, Any]) -> str:
    """Continued fine-tuning (--init-from): the run this one started from, and that run's own parents."""
    lineage = results.get("lineage")
    if not isinstance(lineage, dict):
        return ""
    rows = []
    while isinstance(lineage, dict):
        rows.append(f"<tr><td>{html.escape(str(lineage.get('parent_run')))}</td><td>{html.escape(str(lineage.get('parent_method')))}</td>"
                    f"<td>{html.escape(str(lineage.get('parent_base')))}</td>"
                    f"<td><code>{html.escape(str(lineage.get('parent_weights_sha256', ''))[:16])}</code></td></tr>")
        lineage = lineage.get("parent_lineage")
    return ("<h2>Lineage</h2><p class='muted'>This run continued training an earlier run's weights (--init-from); "
            "the base-model column below is the original base.</p><table><tr><th>parent run (newest first)</th><th>method</th>"
            f"<th>base</th><th>weights sha256</th></tr>{''.join(rows)}</table>")


def _page(run_dir: Path, events: list[dict[str, Any]], results: dict[str, Any], finished: bool) -> str:
    steps = latest_by_step([e for e in events if e["type"] == "train.step"])
    evals = latest_by_step([e for e in events if e["type"] == "eval.result"])
    issues = results.get("issues") if finished else [e for e in events if e["type"] == "issue.detected"]
    markers = _markers(events)
    curve = lambda key: [(e["step"], _number(e.get(key))) for e in steps if key in e]  # noqa: E731
    charts = [
        line_chart("loss", [("train", "#2563eb", curve("loss")),
                            ("validation", "#dc2626", [(e["step"], _number(e["validation_loss"])) for e in evals])], markers),
        line_chart("learning rate", [("lr", "#7c3aed", curve("learning_rate"))], markers),
        line_chart("gradient norm (before clipping)", [("grad norm", "#0891b2", curve("grad_norm"))], markers),
        line_chart("throughput (tokens/s)", [("this step", "#86efac", curve("step_tokens_per_second")),
                                             ("run average", "#059669", curve("tokens_per_second"))], markers),
        line_chart("memory (MB)", [("RSS", "#d97706", curve("memory_mb")), ("GPU", "#9333ea", curve("gpu_memory_mb"))], markers),
    ]
    train = results.get("train") or {}
    cards = [("status", results.get("status")), ("steps", train.get("steps", steps[-1]["step"] if steps else None)),
             ("final train loss", train.get("final_train_loss")), ("best validation loss", train.get("best_validation_loss")),
             ("weights saved", f"step {train['final_weights_step']}" if train.get("final_weights_step") else None),
             ("issues", len(issues or []))]
    card_html = "".join(f"<div class='card'>{html.escape(label)}<b class='status-{html.escape(str(value))}'>{_fmt(value)}</b></div>"
                        for label, value in cards)
    train_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in train.items() if not isinstance(v, (list, dict)))
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    data = results.get("data") or {}
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tuneforge run {html.escape(run_dir.name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<h1>tuneforge run <code>{html.escape(run_dir.name)}</code></h1>
<p>status: <b class="status-{html.escape(str(results.get('status')))}">{html.escape(str(results.get('status')))}</b>{' — ' + html.escape(str(results['error'])) if results.get('error') else ''}</p>
<div class="cards">{card_html}</div>
{_lineage_section(results)}
{_cross_validation_section(results) or '<h2>Base vs tuned on the held-out test split</h2>' + _comparison_table(results)}
{_hyperparameters_section(results)}
{_baselines_section(results)}
{_forgetting_section(results)}
{_error_analysis_section(results)}
<h2>Training curves</h2>
<p class="muted">Dashed lines mark detected issues (red error, amber warning, blue info), resumes (teal), rollbacks (violet) and stops (grey); hover them for details.</p>
<div class="charts">{''.join(charts) or '<p class="muted">No training steps recorded.</p>'}</div>
<h2>Issues</h2>{_issues_table(issues or [])}
<h2>Timeline</h2>{_timeline(events) or '<p class="muted">Nothing yet.</p>'}
<h2>Training</h2><table>{train_rows}</table>
<h2>Data</h2><pre>{html.escape(json.dumps(data, indent=2))}</pre>
<h2>Config</h2><pre>{html.escape(config)}</pre>
<script>{SCRIPT}</script>
</body></html>
"""


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path."""
    path = run_dir / "report.html"
    atomic_write_text(path, build_report(run_dir))
    return path
