"""``report.html``: a self-contained page about a run, built from ``events.jsonl`` and ``results.json``.

Plain HTML with inline SVG charts: no scripts, no network, opens anywhere.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Sequence

from tuneforge.core.paths import atomic_write_text
from tuneforge.monitor.events import read_events

Series = tuple[str, str, Sequence[tuple[float, float]]]  # (label, colour, points)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:980px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.3rem .8rem;border-bottom:1px solid #eef;text-align:right}
td:first-child,th:first-child{text-align:left}.better{color:#137a3a;font-weight:600}.worse{color:#b42318}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.chart{border:1px solid #e3e6ee;border-radius:6px;padding:.5rem}
.muted{color:#667}pre{background:#f6f7fb;padding:.8rem;overflow:auto;font-size:.85rem}
"""


def line_chart(title: str, series: Sequence[Series], x_label: str = "step", width: int = 460, height: int = 240) -> str:
    """An SVG line chart of one or more series, with axes ticks at the data range ends."""
    points = [p for _, _, pts in series for p in pts if math.isfinite(p[1])]
    if not points:
        return ""
    left, right, top, bottom = 56, 12, 28, 34
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="16" font-size="13" font-weight="600">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#99a"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#99a"/>']
    for value in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{left - 4}" y="{sy(value) + 4:.1f}" font-size="10" text-anchor="end">{value:.3g}</text>')
    for value in (x0, x1):
        parts.append(f'<text x="{sx(value):.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">{value:.4g}</text>')
    parts.append(f'<text x="{(left + width) / 2:.0f}" y="{height - 4}" font-size="10" text-anchor="middle">{x_label}</text>')
    for index, (label, colour, pts) in enumerate(series):
        good = [p for p in pts if math.isfinite(p[1])]
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{path}"/>')
        if len(good) == 1:
            parts.append(f'<circle cx="{sx(good[0][0]):.1f}" cy="{sy(good[0][1]):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{width - right - 4}" y="{top + 12 * index}" font-size="11" fill="{colour}" text-anchor="end">{html.escape(label)}</text>')
    parts.append("</svg>")
    return '<div class="chart">' + "".join(parts) + "</div>"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return html.escape("—" if value is None else str(value))


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


def build_report(run_dir: Path) -> str:
    """The HTML page of a run, as a string."""
    events = list(read_events(run_dir / "events.jsonl"))
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"status": "running"}
    steps = [e for e in events if e["type"] == "train.step"]
    evals = [e for e in events if e["type"] == "eval.result"]
    issues = [e for e in events if e["type"] == "issue.detected"]
    charts = [
        line_chart("loss", [("train", "#2563eb", [(e["step"], _number(e["loss"])) for e in steps]),
                            ("validation", "#dc2626", [(e["step"], _number(e["validation_loss"])) for e in evals])]),
        line_chart("learning rate", [("lr", "#7c3aed", [(e["step"], _number(e["learning_rate"])) for e in steps])]),
        line_chart("throughput (tokens/s)", [("tokens/s", "#059669", [(e["step"], _number(e["tokens_per_second"])) for e in steps])]),
        line_chart("memory (MB)", [("RSS", "#d97706", [(e["step"], _number(e["memory_mb"])) for e in steps])]),
    ]
    train = results.get("train") or {}
    train_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in train.items() if not isinstance(v, (list, dict)))
    issue_rows = "".join(f"<li>step {e.get('step')}: <b>{html.escape(str(e.get('severity')))}</b> {html.escape(str(e.get('message')))} — {html.escape(str(e.get('suggestion')))}</li>" for e in issues)
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    data = results.get("data") or {}
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tuneforge run {html.escape(run_dir.name)}</title>
<style>{STYLE}</style></head><body>
<h1>tuneforge run <code>{html.escape(run_dir.name)}</code></h1>
<p>status: <b>{html.escape(str(results.get('status')))}</b>{' — ' + html.escape(str(results['error'])) if results.get('error') else ''}</p>
<h2>Base vs tuned on the held-out test split</h2>{_comparison_table(results)}
<h2>Training curves</h2><div class="charts">{''.join(charts) or '<p class="muted">No training steps recorded.</p>'}</div>
<h2>Training</h2><table>{train_rows}</table>
<h2>Issues</h2>{'<ul>' + issue_rows + '</ul>' if issue_rows else '<p class="muted">None detected.</p>'}
<h2>Data</h2><pre>{html.escape(json.dumps(data, indent=2))}</pre>
<h2>Config</h2><pre>{html.escape(config)}</pre>
</body></html>
"""


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path."""
    path = run_dir / "report.html"
    atomic_write_text(path, build_report(run_dir))
    return path
