"""Put evaluations side by side: the base-vs-tuned table and model-vs-model comparisons.

``compare_models(evaluations)`` is the metric table. ``compare_sources`` (``tuneforge compare``)
evaluates runs, checkpoints and base models on the same examples and adds, per pair, McNemar's exact
test on per-example correctness and a paired bootstrap confidence interval; ``write_comparison``
writes comparison.json, per_example.jsonl and compare.html (training curves overlaid, disagreements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tuneforge.evaluate.metrics import lower_is_better

# Metrics where lower is better (the registry's specs say so for the rest); every other score is higher-is-better.
LOWER_IS_BETTER = {"loss", "perplexity"}
ORDER = ["accuracy", "exact_match", "precision", "recall", "f1_score", "bleu", "rouge_l", "loss", "perplexity", "token_accuracy"]


def compare_models(evaluations: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """Rows of ``{"metric", <name>: value ..., "best"}`` for every metric any evaluation has.

    ``evaluations`` maps a model name to its performance scores.
    """
    names = list(evaluations)
    metrics = [m for m in ORDER if any(m in scores for scores in evaluations.values())]
    metrics += sorted({m for scores in evaluations.values() for m in scores} - set(metrics))
    rows = []
    for metric in metrics:
        values = {name: evaluations[name].get(metric) for name in names}
        present = {name: value for name, value in values.items() if value is not None}
        best = None
        if len(present) > 1:
            pick = min if metric in LOWER_IS_BETTER or lower_is_better(metric) else max
            best = pick(present, key=present.__getitem__)
        rows.append({"metric": metric, **values, "best": best})
    return rows


# ----- comparing runs and models on the same data (`tuneforge compare`) --------------------------

SIGNIFICANCE = 0.05
BOOTSTRAP_SAMPLES = 2000
PER_EXAMPLE = "per_example.jsonl"
COMPARISON_JSON = "comparison.json"
COMPARISON_HTML = "compare.html"
MAX_DISAGREEMENTS_SHOWN = 200


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test of two models' paired right/wrong answers on the same examples.

    Only the discordant pairs count: ``only_a`` (a right, b wrong) and ``only_b``. Under the null
    hypothesis (equally accurate) each discordant pair is a fair coin, so the two-sided p-value is
    ``min(1, 2 · P[Binomial(only_a + only_b, ½) ≤ min(only_a, only_b)])``, computed exactly.
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired answers must cover the same examples ({len(a_correct)} vs {len(b_correct)})")
    only_a = sum(1 for a, b in zip(a_correct, b_correct) if a and not b)
    only_b = sum(1 for a, b in zip(a_correct, b_correct) if b and not a)
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n if n else 1.0
    return {"test": "mcnemar_exact", "only_a": only_a, "only_b": only_b, "p_value": min(1.0, 2 * tail)}


def paired_bootstrap(a_scores: Sequence[float], b_scores: Sequence[float], samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0) -> tuple[float, float]:
    """The 95 % percentile confidence interval of mean(b) − mean(a), resampling examples in pairs (seeded)."""
    import numpy as np

    a, b = np.asarray(a_scores, dtype=float), np.asarray(b_scores, dtype=float)
    if not len(a):
        return (0.0, 0.0)
    picks = np.random.default_rng(seed).integers(0, len(a), size=(samples, len(a)))
    differences = (b[picks] - a[picks]).mean(axis=1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return (float(low), float(high))


def example_correct(predictions: Sequence[Mapping[str, Any]], task: str, labels: Sequence[str] | None = None) -> list[bool]:
    """Per example, whether the answer is right: the named label for label tasks (as accuracy scores it), else exact match."""
    from tuneforge.evaluate.metrics import extract_label, normalize_answer

    references = [normalize_answer(p["reference"]) for p in predictions]
    if task == "classification":
        candidates = sorted(set(references) | {normalize_answer(label) for label in labels or ()})
        return [extract_label(p["prediction"], candidates) == ref for p, ref in zip(predictions, references)]
    return [normalize_answer(p["prediction"]) == ref for p, ref in zip(predictions, references)]


def significance(names: Sequence[str], correct: Mapping[str, Sequence[bool]], metric: str,
                 performances: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """One row per pair (a, b): McNemar's exact p-value on per-example correctness and a paired bootstrap
    95 % CI of the difference in per-example correctness (b − a), beside ``metric``'s difference."""
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            test = mcnemar_exact(correct[a], correct[b])
            low, high = paired_bootstrap([float(x) for x in correct[a]], [float(x) for x in correct[b]])
            a_value, b_value = performances[a].get(metric), performances[b].get(metric)
            rows.append({"a": a, "b": b, "metric": metric, "a_value": a_value, "b_value": b_value,
                         "difference": None if a_value is None or b_value is None else b_value - a_value,
                         **test, "ci95": [low, high], "ci_of": "per-example correctness, b − a (paired bootstrap, "
                         f"{BOOTSTRAP_SAMPLES} resamples)", "significant": test["p_value"] < SIGNIFICANCE})
    return rows


def per_example_rows(names: Sequence[str], predictions: Mapping[str, Sequence[Mapping[str, Any]]],
                     correct: Mapping[str, Sequence[bool]]) -> list[dict[str, Any]]:
    """One row per example: input, reference, each model's answer and whether it is right, ``disagree``."""
    first = predictions[names[0]]
    rows = []
    for index, example in enumerate(first):
        answers = {name: predictions[name][index]["prediction"] for name in names}
        right = {name: bool(correct[name][index]) for name in names}
        rows.append({"index": index, "input": example["input"], "reference": example["reference"], "answers": answers,
                     "correct": right, "disagree": len(set(right.values())) > 1})
    return rows


def regressions(performances: Mapping[str, Mapping[str, float]], baseline: str, metric: str,
                tolerance: float) -> list[dict[str, Any]]:
    """Every model worse than ``baseline`` on ``metric`` by more than ``tolerance`` (direction from the registry)."""
    if baseline not in performances or metric not in performances[baseline]:
        raise KeyError(f"{baseline!r} has no {metric!r} score")
    lower = metric in LOWER_IS_BETTER or lower_is_better(metric)
    reference = performances[baseline][metric]
    found = []
    for name, scores in performances.items():
        if name == baseline or metric not in scores:
            continue
        worse_by = (scores[metric] - reference) if lower else (reference - scores[metric])
        if worse_by > tolerance:
            found.append({"model": name, "metric": metric, "value": scores[metric], "baseline": baseline,
                          "baseline_value": reference, "worse_by": worse_by, "tolerance": tolerance})
    return found


@dataclass
class Contender:
    """One thing to compare: a base model name, a run directory or a checkpoint of one."""

    name: str
    source: str
    kind: str  # "model", "run", "checkpoint" or "fine-tuned" (an ``ft:`` model id of the jobs store)
    run_dir: Path | None = None  # the run it belongs to (training curves, default test data)
    weights: Path | None = None  # what load_trained loads on top of the base (None: the base model itself)
    base_model: str | None = None


def resolve_contender(source: str) -> Contender:
    """What ``source`` names: a run directory (config.yaml or saved weights), a checkpoint
    (``RUN/checkpoints/step-N``, or its ``weights/``), a bare weights directory, else a base model name."""
    from tuneforge.runs import run_config

    path = Path(source).expanduser()
    if not path.is_dir():
        return Contender(name=source, source=source, kind="model", base_model=source)
    if (path / "weights").is_dir() and path.parent.name == "checkpoints":
        path = path / "weights"
    if path.name == "weights" and path.parent.parent.name == "checkpoints":
        run_dir = path.parent.parent.parent
        model = run_config(run_dir).get("model") if (run_dir / "config.yaml").is_file() else None
        return Contender(name=f"{run_dir.name}/{path.parent.name}", source=source, kind="checkpoint", run_dir=run_dir,
                         weights=path, base_model=model)
    is_run = (path / "config.yaml").is_file() or (path / "events.jsonl").is_file()
    if not is_run and (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        return Contender(name=path.name, source=source, kind="model", base_model=str(path))  # a model directory
    return Contender(name=path.name, source=source, kind="run" if is_run else "checkpoint",
                     run_dir=path if is_run else None, weights=path)


def default_test_data(contenders: Sequence[Contender]) -> Path:
    """The first run's own test split (``RUN_DIR/data/test.jsonl``); a ``ConfigError`` when there is none."""
    from tuneforge.core.errors import ConfigError

    for contender in contenders:
        if contender.run_dir is not None and (contender.run_dir / "data" / "test.jsonl").is_file():
            return contender.run_dir / "data" / "test.jsonl"
    raise ConfigError(["data: no run among the models has a test split (RUN_DIR/data/test.jsonl); name the examples "
                       "to compare on with --data FILE"])


@dataclass
class Comparison:
    """Every model's evaluation on the same examples, the metric table, pairwise tests and per-example rows."""

    contenders: list[Contender]
    evaluations: dict[str, Any]  # name -> ModelEvaluation
    metric: str
    data: str
    table: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    regressions: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, Any] = field(default_factory=dict)  # name in the table -> how its prompts were built
    baselines_skipped: str | None = None
    verdicts: dict[str, Any] = field(default_factory=dict)  # trained model -> evaluate.baselines.verdict

    @property
    def performances(self) -> dict[str, dict[str, float]]:
        return {name: evaluation.performance for name, evaluation in self.evaluations.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "metric": self.metric,
                "models": [{"name": c.name, "source": c.source, "kind": c.kind} for c in self.contenders],
                "performance": self.performances,
                "resources": {name: evaluation.resources for name, evaluation in self.evaluations.items()},
                "table": self.table, "pairs": self.pairs, "regressions": self.regressions,
                "baselines": self.baselines, "baselines_skipped": self.baselines_skipped, "verdicts": self.verdicts,
                "disagreements": sum(row["disagree"] for row in self.examples)}


def unique_names(contenders: list[Contender]) -> list[Contender]:
    """Give every contender a name no other has (the full source where short names clash)."""
    seen: dict[str, int] = {}
    for contender in contenders:
        seen[contender.name] = seen.get(contender.name, 0) + 1
    for contender in contenders:
        if seen[contender.name] > 1:
            contender.name = contender.source
    return contenders


def compare_sources(sources: Sequence[str], data: str | Path | None = None, metric: str = "accuracy",
                    baseline: str | None = None, fail_if_worse: float | None = None, max_examples: int | None = None,
                    on_model: Callable[[str, int], None] | None = None,
                    resolve: Callable[[str], Contender | None] | None = None, baselines: bool = True,
                    shots: int = 5, retriever: str = "bm25", train: Sequence[Any] | None = None,
                    **evaluation_args: Any) -> Comparison:
    """Evaluate every source (run directory, checkpoint or base model name) on the same examples and compare.

    ``data`` defaults to the first run's test split. ``metric`` is the one the regression check and
    the per-pair difference use (falls back to exact_match for free-text data). ``baseline`` (a
    source or its name) with ``fail_if_worse`` lists in ``regressions`` every model worse than it by
    more than that. ``evaluation_args`` go to ``evaluate_model``; ``on_model(name, examples)`` is
    told before each evaluation. ``resolve(source)`` names what a source is before the file system is
    asked (the jobs store resolves ``ft:`` model ids and checkpoint ids so); None: not its kind.
    ``baselines``: also the first trained model's base prompted with ``shots`` examples (few-shot and
    ``retriever`` few-shot, from ``train`` or that run's train split), as rows of the table and pairs of
    the tests, with a verdict per trained model (``evaluate/worth_it.py``); never checked for regressions.
    """
    from tuneforge.data.manager import TrainingDataManager
    from tuneforge.evaluate.metrics import is_label_task, normalize_answer

    metric, evaluation_args = _with_metric(metric, evaluation_args)
    contenders = unique_names([(resolve(source) if resolve else None) or resolve_contender(source) for source in sources])
    path = Path(data) if data else default_test_data(contenders)
    examples, _ = TrainingDataManager().load(path)
    examples = examples[:max_examples] if max_examples else examples
    references = [example.output for example in examples if not example.is_text]
    labels = sorted({normalize_answer(r) for r in references}) if references and is_label_task(references) else None
    evaluations = {}
    for contender in contenders:
        if on_model:
            on_model(contender.name, len(examples))
        evaluations[contender.name] = _evaluate(contender, examples, labels, evaluation_args)
    comparison = Comparison(contenders, evaluations, metric, str(path))
    if baselines:
        _add_baselines(comparison, examples, labels, train, shots, retriever, on_model, evaluation_args)
    comparison.table = compare_models(comparison.performances)
    names = [c.name for c in contenders]
    if not any(metric in p for p in comparison.performances.values()):
        comparison.metric = metric = "exact_match"
    if all(evaluations[name].predictions for name in names):
        correct = {name: example_correct(evaluations[name].predictions, evaluations[name].task, labels) for name in names}
        comparison.pairs = significance(names, correct, metric, comparison.performances)
        comparison.examples = per_example_rows(names, {n: evaluations[n].predictions for n in names}, correct)
    if baseline is not None and fail_if_worse is not None:
        models = [c for c in contenders if c.kind != "baseline"]
        comparison.regressions = regressions({c.name: evaluations[c.name].performance for c in models},
                                             _baseline_name(baseline, models), metric, fail_if_worse)
    return comparison


def _add_baselines(comparison: Comparison, examples: Sequence[Any], labels: list[str] | None, train: Sequence[Any] | None,
                   shots: int, retriever: str, on_model: Callable[[str, int], None] | None,
                   evaluation_args: dict[str, Any]) -> None:
    """The prompting baselines of the first trained model's base as contenders, and each trained model's verdict."""
    from tuneforge.evaluate.baselines import LABELS, candidates_of, verdict
    from tuneforge.evaluate.worth_it import BASELINE_KIND, baselines_for_comparison

    if on_model:
        on_model("prompting baselines", len(examples))
    found, base, comparison.baselines_skipped = baselines_for_comparison(
        comparison.contenders, examples, labels, train, shots, retriever, **evaluation_args)
    named = {}
    for key, baseline in found.items():
        name = f"{LABELS[key]} ({Path(str(base)).name})"
        comparison.contenders.append(Contender(name=name, source=key, kind=BASELINE_KIND, base_model=base))
        comparison.evaluations[name] = baseline.evaluation
        comparison.baselines[name] = baseline.to_dict()
        named[name] = baseline
    if not named:
        return
    zero_shot = next((comparison.evaluations[c.name] for c in comparison.contenders
                      if c.kind == "model" and c.base_model == base), None)
    for contender in comparison.contenders:
        if contender.kind in ("run", "checkpoint", "fine-tuned"):
            evaluation = comparison.evaluations[contender.name]
            found_verdict = verdict({"performance": evaluation.performance, "resources": evaluation.resources},
                                    candidates_of(zero_shot, named))
            if found_verdict:
                comparison.verdicts[contender.name] = found_verdict


def _with_metric(metric: str, evaluation_args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the performance key of ``metric``, the evaluation settings scoring it): a registered metric or a
    ``module:function`` plug-in is added to the metrics evaluated; a performance key (``f1_score``) is kept."""
    from tuneforge.core.registries import METRICS
    from tuneforge.core.registry import is_plugin_reference
    from tuneforge.evaluate.metrics import metric_specs
    from tuneforge.evaluate.run import DEFAULT_METRICS

    if metric not in METRICS and not is_plugin_reference(metric):
        return metric, evaluation_args
    (spec,) = metric_specs([metric])
    metrics = list(evaluation_args.get("metrics") or DEFAULT_METRICS)
    return spec.keys[0], {**evaluation_args, "metrics": list(dict.fromkeys([*metrics, metric]))}


def _baseline_name(baseline: str, contenders: Sequence[Contender]) -> str:
    from tuneforge.core.errors import ConfigError

    for contender in contenders:
        if baseline in (contender.name, contender.source) or (
                Path(baseline).expanduser().resolve() == Path(contender.source).expanduser().resolve()):
            return contender.name
    raise ConfigError([f"baseline: {baseline!r} is not one of the models compared "
                       f"({', '.join(c.name for c in contenders)}); list it among them too"])


def _evaluate(contender: Contender, examples: Sequence[Any], labels: list[str] | None, evaluation_args: dict[str, Any]) -> Any:
    import gc

    from tuneforge.evaluate.run import evaluate_model
    from tuneforge.runs import load_trained

    model, tokenizer, _ = load_trained(contender.weights, contender.base_model)
    try:
        return evaluate_model(model, tokenizer, examples, labels=labels, **evaluation_args)
    finally:
        del model
        gc.collect()


# ----- writing a comparison -----------------------------------------------------------------------

COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """``comparison.json``, ``per_example.jsonl`` (one line per example) and ``compare.html`` in ``out_dir``."""
    import json

    from tuneforge.core.paths import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / COMPARISON_JSON, "examples": out / PER_EXAMPLE, "html": out / COMPARISON_HTML}
    atomic_write_json(paths["json"], comparison.to_dict())
    atomic_write_text(paths["examples"], "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in comparison.examples))
    atomic_write_text(paths["html"], comparison_page(comparison))
    return paths


def training_curves(contenders: Sequence[Contender]) -> tuple[list[tuple[str, str, list[tuple[float, float]]]], list[Any]]:
    """(train-loss series, validation-loss series) of every contender that has a run, one colour each."""
    from tuneforge.monitor.events import read_events
    from tuneforge.report import latest_by_step

    train, validation = [], []
    for index, contender in enumerate(contenders):
        if contender.run_dir is None or not (contender.run_dir / "events.jsonl").is_file():
            continue
        events = list(read_events(contender.run_dir / "events.jsonl"))
        colour = COLOURS[index % len(COLOURS)]
        steps = latest_by_step([e for e in events if e.get("type") == "train.step" and "loss" in e])
        evals = latest_by_step([e for e in events if e.get("type") == "eval.result" and "validation_loss" in e])
        train.append((contender.name, colour, [(float(e["step"]), float(e["loss"])) for e in steps]))
        validation.append((contender.name, colour, [(float(e["step"]), float(e["validation_loss"])) for e in evals]))
    return train, validation


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.4f}"


def comparison_page(comparison: Comparison) -> str:
    """A self-contained HTML page: the metric table, the pairwise tests, overlaid training curves, the disagreements."""
    import html

    from tuneforge.report import STYLE, _fmt, line_chart

    names = [c.name for c in comparison.contenders]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    table = [f"<table><tr><th>metric</th>{head}</tr>"]
    for row in comparison.table:
        table.append(f"<tr><td>{html.escape(row['metric'])}</td>" + "".join(
            f"<td class='{'better' if row.get('best') == n else ''}'>{_fmt(row.get(n))}</td>" for n in names) + "</tr>")
    table.append("</table>")
    pairs = ["<table><tr><th>a</th><th>b</th><th>metric a</th><th>metric b</th><th>b − a</th><th>only a right</th>"
             "<th>only b right</th><th>McNemar exact p</th><th>95 % CI (paired bootstrap)</th></tr>"]
    for p in comparison.pairs:
        pairs.append(f"<tr><td>{html.escape(p['a'])}</td><td>{html.escape(p['b'])}</td><td>{_fmt(p['a_value'])}</td>"
                     f"<td>{_fmt(p['b_value'])}</td><td>{_signed(p['difference'])}</td>"
                     f"<td>{p['only_a']}</td><td>{p['only_b']}</td>"
                     f"<td class='{'better' if p['significant'] else ''}'>{p['p_value']:.4g}</td>"
                     f"<td>[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]</td></tr>")
    pairs.append("</table>")
    train, validation = training_curves(comparison.contenders)
    charts = line_chart("training loss", train) + line_chart("validation loss", validation) if train else ""
    disagree = [row for row in comparison.examples if row["disagree"]]
    rows = [f"<table class='text'><tr><th>#</th><th>input</th><th>reference</th>{head}</tr>"]
    for row in disagree[:MAX_DISAGREEMENTS_SHOWN]:
        rows.append(f"<tr><td>{row['index']}</td><td>{html.escape(row['input'])}</td><td>{html.escape(row['reference'])}</td>"
                    + "".join(f"<td class='{'better' if row['correct'][n] else 'worse'}'>{html.escape(row['answers'][n])}</td>"
                              for n in names) + "</tr>")
    rows.append("</table>")
    verdicts = "".join(f"<p class='{'better' if v.get('worth_it') else 'worse'}'>{html.escape(name)}: {html.escape(v['message'])}</p>"
                       for name, v in comparison.verdicts.items())
    regress = "".join(f"<p class='worse'>{html.escape(r['model'])} is worse than {html.escape(r['baseline'])} by "
                      f"{r['worse_by']:.4f} {html.escape(r['metric'])} (allowed {r['tolerance']})</p>" for r in comparison.regressions)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tuneforge compare</title>
<style>{STYLE}</style></head><body>
<h1>tuneforge compare</h1><p class="muted">{len(comparison.examples)} examples from {html.escape(comparison.data)}</p>{regress}
<h2>Metrics</h2>{verdicts}{''.join(table)}
<h2>Is the difference real?</h2><p class="muted">Per pair: McNemar's exact test on which examples each model answers
right (significant below p = {SIGNIFICANCE}), and a paired bootstrap 95 % confidence interval of the difference in the
share answered right.</p>{''.join(pairs)}
<h2>Training curves</h2>{charts or '<p class="muted">No run among the models has training events.</p>'}
<h2>Where they disagree ({len(disagree)})</h2>{''.join(rows)}
</body></html>
"""
