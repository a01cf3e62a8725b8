"""``validate --report``: the data doctor's findings as one self-contained HTML page (inline CSS and SVG).

The page works offline and from a file: no script, no external asset. It shows the verdict, the
statistics, a histogram of example lengths, the label distribution and every listed finding.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from tuneforge.core.paths import atomic_write_text
from tuneforge.data.validate import ValidationReport

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1d232a;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde3ea;padding-bottom:.2rem}
.verdict{display:inline-block;padding:.25rem .7rem;border-radius:4px;font-weight:600}
.ok{background:#e3f6e8;color:#14652c}.bad{background:#fde8e8;color:#9b1c1c}
table{border-collapse:collapse;margin:.5rem 0;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eef1f4;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.error{color:#9b1c1c;font-weight:600}.warning{color:#8a5a00;font-weight:600}.muted{color:#68727d}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #dde3ea;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.35rem}code{background:#f6f8fa;padding:0 .2rem;border-radius:3px}
svg text{font:11px system-ui,sans-serif;fill:#39424c}
"""


def render_html(report: ValidationReport) -> str:
    """The whole page as a string."""
    data = report.to_dict()
    stats = data["stats"]
    verdict = ("ok", "no errors") if report.ok else ("bad", f"{report.error_count} error(s)")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>tuneforge data report: {escape(report.path)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Data report: <code>{escape(report.path)}</code></h1>",
        f"<p><span class='verdict {verdict[0]}'>{verdict[1]}</span> &nbsp; {report.warning_count} warning(s) · "
        f"format <b>{escape(str(report.data_format))}</b></p>",
        _cards(stats),
        "<h2>Findings</h2>", _findings(data),
        "<h2>Example lengths</h2>", _lengths(stats), _histogram(stats["lengths"]),
        "<h2>Labels</h2>", _labels(stats.get("labels")),
        "<h2>Training</h2>", _training(stats),
    ]
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in report.notes) + "</ul>")
    parts.append("<p class='muted'>Written by <code>tuneforge validate --report</code>. Codes are listed in "
                 "<code>tuneforge.data.findings.CODES</code>.</p></body></html>")
    return "\n".join(parts)


def write_report(report: ValidationReport, path: str | Path) -> Path:
    """Write the page to ``path`` (atomically) and return the path."""
    target = Path(path)
    atomic_write_text(target, render_html(report))
    return target


def _cards(stats: dict[str, Any]) -> str:
    splits = stats["splits"]
    items = [("rows", stats["rows"]), ("usable examples", stats["usable_examples"]), ("invalid rows", stats["invalid_rows"])]
    items += [(f"{name}{' (est.)' if splits.get('estimated') else ''}", splits[name]) for name in ("train", "validation", "test") if name in splits]
    tokens = stats.get("tokens")
    if tokens:
        items += [("trained tokens", tokens["trained"]), ("truncated examples", tokens["truncated_examples"])]
    return "<div class='cards'>" + "".join(f"<div class='card'><b>{value:,}</b>{escape(label)}</div>" for label, value in items) + "</div>"


def _findings(data: dict[str, Any]) -> str:
    if not data["findings"]:
        return "<p>No problems found.</p>"
    counts = "".join(f"<tr><td class='{_sev(code)}'>{_sev(code)}</td><td><code>{escape(code)}</code></td><td class='n'>{n:,}</td></tr>"
                     for code, n in data["counts_by_code"].items())
    rows = "".join(
        f"<tr><td class='{f['severity']}'>{f['severity']}</td><td><code>{escape(f['code'])}</code></td>"
        f"<td>{escape(f['where'])}</td><td>{escape(f.get('field') or '')}</td><td>{escape(f['message'])}</td></tr>"
        for f in data["findings"])
    omitted = data["omitted"]
    more = ("<p class='muted'>Not listed (over the per-code limit): " + ", ".join(f"{escape(c)} {n:,}" for c, n in omitted.items())
            + "</p>") if omitted else ""
    return (f"<table><tr><th>severity</th><th>code</th><th class='n'>count</th></tr>{counts}</table>"
            f"<table><tr><th>severity</th><th>code</th><th>where</th><th>field</th><th>message</th></tr>{rows}</table>{more}")


def _sev(code: str) -> str:
    from tuneforge.data.findings import CODES

    return CODES.get(code, ("error", ""))[0]


def _lengths(stats: dict[str, Any]) -> str:
    lengths = stats["lengths"]
    rows = "".join(
        f"<tr><td>{name}</td>" + "".join(f"<td class='n'>{_fmt(lengths[name].get(key))}</td>" for key in ("min", "mean", "p50", "p95", "max")) + "</tr>"
        for name in ("prompt", "completion", "example"))
    return (f"<p class='muted'>In {escape(lengths['unit'])}.</p><table><tr><th>part</th><th class='n'>min</th><th class='n'>mean</th>"
            f"<th class='n'>p50</th><th class='n'>p95</th><th class='n'>max</th></tr>{rows}</table>")


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def _bars(items: list[tuple[str, int]], title: str, width: int = 760, bar_height: int = 18) -> str:
    """A horizontal bar chart in SVG."""
    if not items:
        return ""
    top = max(count for _, count in items) or 1
    label_width, height = 170, bar_height * len(items) + 30
    bars = []
    for index, (label, count) in enumerate(items):
        y = 20 + index * bar_height
        length = (width - label_width - 70) * count / top
        bars.append(f"<text x='{label_width - 6}' y='{y + 12}' text-anchor='end'>{escape(label[:28])}</text>"
                    f"<rect x='{label_width}' y='{y + 2}' width='{length:.1f}' height='{bar_height - 5}' fill='#4c78a8'/>"
                    f"<text x='{label_width + length + 4:.1f}' y='{y + 12}'>{count:,}</text>")
    return (f"<svg role='img' aria-label='{escape(title)}' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
            f"<text x='0' y='12' font-weight='600'>{escape(title)}</text>{''.join(bars)}</svg>")


def _histogram(lengths: dict[str, Any], width: int = 760, height: int = 220) -> str:
    bins = lengths.get("histogram") or []
    if not bins:
        return ""
    top = max(b["count"] for b in bins) or 1
    plot_w, plot_h, left, base = width - 60, height - 60, 50, height - 35
    step = plot_w / len(bins)
    rects = []
    for index, b in enumerate(bins):
        h = plot_h * b["count"] / top
        x = left + index * step
        rects.append(f"<rect x='{x + 1:.1f}' y='{base - h:.1f}' width='{max(step - 2, 1):.1f}' height='{h:.1f}' fill='#4c78a8'>"
                     f"<title>{b['low']:,}–{b['high'] - 1:,}: {b['count']:,}</title></rect>")
    first, last = bins[0]["low"], bins[-1]["high"] - 1
    axis = (f"<line x1='{left}' y1='{base}' x2='{left + plot_w}' y2='{base}' stroke='#9aa4ae'/>"
            f"<text x='{left}' y='{base + 15}'>{first:,}</text><text x='{left + plot_w}' y='{base + 15}' text-anchor='end'>{last:,}</text>"
            f"<text x='{left + plot_w / 2}' y='{base + 28}' text-anchor='middle'>example length ({escape(lengths['unit'])})</text>"
            f"<text x='{left - 6}' y='{base - plot_h + 4}' text-anchor='end'>{top:,}</text>")
    return (f"<svg role='img' aria-label='length histogram' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
            f"<text x='0' y='14' font-weight='600'>examples by length</text>{''.join(rects)}{axis}</svg>")


def _labels(labels: dict[str, Any] | None) -> str:
    if not labels:
        return "<p class='muted'>No labels: the answers are free text (a <code>label</code> column would be used if present).</p>"
    items = list(labels["counts"].items())[:40]
    splits = labels.get("by_split") or {}
    table = ""
    if len(splits) > 1:
        names = list(splits)
        head = "".join(f"<th class='n'>{escape(n)}</th>" for n in names)
        body = "".join(f"<tr><td>{escape(label)}</td>" + "".join(f"<td class='n'>{splits[n].get(label, 0):,}</td>" for n in names) + "</tr>"
                       for label, _ in items)
        table = f"<table><tr><th>label</th>{head}</tr>{body}</table>"
    return f"<p class='muted'>From the {escape(labels['source'])}.</p>" + _bars(items, "examples per label") + table


def _training(stats: dict[str, Any]) -> str:
    training = stats["training"]
    rows = [("train examples", training["train_examples"]), ("batch size × accumulation",
            f"{training['batch_size']} × {training['gradient_accumulation_steps']}"),
            ("steps per epoch", training["steps_per_epoch"]), ("epochs", training["epochs"]), ("total steps", training["total_steps"])]
    if "tokens_per_epoch" in training:
        rows += [("tokens per epoch", training["tokens_per_epoch"]), ("trained tokens per epoch", training["trained_tokens_per_epoch"])]
    estimate = training.get("estimate")
    if estimate:
        rows += [("measured tokens/s", estimate.get("tokens_per_second")), ("estimated training time (s)", estimate.get("seconds")),
                 ("estimated cost", estimate.get("cost"))]
    body = "".join(f"<tr><td>{escape(label)}</td><td class='n'>{escape(_fmt(value) if not isinstance(value, str) else value)}</td></tr>"
                   for label, value in rows)
    return f"<table>{body}</table>"
