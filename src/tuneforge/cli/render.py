"""Everything the CLI shows a person: progress bars, tables, notes. The only place that formats for a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
out = Console()


def note(message: str) -> None:
    console.print(f"[dim]{message}[/dim]")


class Spinner:
    """A status line while something slow runs (silent when disabled)."""

    def __init__(self, message: str, enabled: bool = True) -> None:
        self.message, self.enabled, self._status = message, enabled, None

    def __enter__(self) -> Spinner:
        if self.enabled:
            self._status = console.status(self.message)
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


class TrainingProgress:
    """Turns pipeline events into progress bars on a terminal, or into a line now and then in a log."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not self.live,
        )
        self.tasks: dict[str, Any] = {}
        self._last_line = 0.0

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def _task(self, name: str, description: str, total: int) -> Any:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(description, total=total, info="")
        return self.tasks[name]

    def _say(self, message: str) -> None:
        if self.enabled:
            console.print(message)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("model.converting", "model.initialized"):
            self._say(f"[dim]{event['message']}[/dim]")
        elif kind == "run.started":
            data = event["data"]
            self._say(f"run directory [bold]{event['run_dir']}[/bold]: {data['train']} train / {data['validation']} validation / "
                      f"{data['test']} test examples ({data['format']} format), model {event['model']}, method {event['method']}")
            if data.get("dropped_rows"):
                where = ", ".join(row.get("where", "?") for row in data.get("dropped", [])[:10])
                self._say(f"[yellow]--skip-invalid dropped {data['dropped_rows']} invalid row(s): {where}"
                          f"{' ...' if data['dropped_rows'] > 10 else ''}[/yellow]")
            warnings = data.get("warnings") or []
            for warning in warnings[:10]:  # e.g. split_leakage: a test prompt that is also a training prompt
                self._say(f"[yellow]warning {warning.get('code')} at {warning.get('where')}: {warning.get('message')}[/yellow]")
            if len(warnings) > 10:
                self._say(f"[yellow]... and {len(warnings) - 10} more data warnings (results.json data.warnings)[/yellow]")
        elif kind == "data.prepared" and event.get("truncated_examples"):
            self._say(f"[yellow]{event['truncated_examples']} example(s) longer than max_length={event['max_length']} were truncated[/yellow]")
        elif kind == "eval.started":
            self._task(f"eval-{event['model']}", f"evaluating {event['model']}", event["examples"])
        elif kind == "baselines.started":
            for name in ("few_shot", "retrieval_few_shot"):
                self._task(f"eval-{name}", f"evaluating {name.replace('_', ' ')} ({event['shots']} shots)", event["examples"])
        elif kind == "baselines.finished":
            for name, baseline in (event.get("baselines") or {}).items():
                perf = baseline.get("performance") or {}
                shown = ", ".join(f"{k} {v:.3f}" for k, v in perf.items() if k in ("accuracy", "f1_score", "bleu"))
                tokens = (baseline.get("resources") or {}).get("prompt_tokens_per_request")
                self._say(f"{baseline.get('label', name)} baseline: {shown}" + (f", {tokens:.0f} prompt tokens/request" if tokens else ""))
        elif kind == "eval.forgetting":
            self._say(f"[{'yellow' if event.get('forgot') else 'dim'}]forgetting: {event.get('message')}[/]")
        elif kind == "eval.verdict":
            self._say(f"[{'green' if event.get('worth_it') else 'yellow'}]verdict: {event.get('message')}[/]")
        elif kind == "eval.progress":
            self.progress.advance(self._task(f"eval-{event['model']}", f"evaluating {event['model']}", 1), event["done"])
        elif kind == "eval.finished":
            perf = event["performance"]
            shown = ", ".join(f"{k} {v:.3f}" for k, v in perf.items() if k in ("accuracy", "f1_score", "loss", "bleu"))
            self._say(f"{event['model']} model: {shown}")
        elif kind == "train.started":
            self._task("train", "training", event["total_steps"])
        elif kind == "train.step":
            self._on_step(event)
        elif kind == "eval.result":
            self._say(f"step {event['step']}: validation loss {event['validation_loss']:.4f}, token accuracy {event['validation_accuracy']:.3f}")
        elif kind == "issue.detected":
            self._say(issue_line(event))
        elif kind == "results.checked":
            self._say(f"[yellow]tuned answers, {event['kind']}: {event['message']} {event.get('suggestion', '')}[/yellow]")
        elif kind == "hyperparameters.chosen":
            self._say(f"[cyan]{escape(event['message'])}[/cyan]")
        elif kind == "train.estimate":
            self._say(f"[cyan]{event['message']}[/cyan]")
        elif kind == "memory.planned" and event.get("changed"):
            self._say(f"[cyan]{event['message']}[/cyan]")
        elif kind == "memory.warning":
            self._say(f"[yellow]{event['message']}[/yellow]")
        elif kind in ("train.resumed", "train.rollback", "train.rollback_refused", "train.early_stopped",
                      "train.best_selected", "train.best_unavailable", "checkpoint.skipped", "checkpoint.cleaned"):
            colour = "yellow" if kind in ("checkpoint.skipped", "train.rollback_refused", "train.best_unavailable") else "cyan"
            self._say(f"[{colour}]{event.get('message', kind)}[/{colour}]")
        elif kind == "train.interrupted":
            self._say(f"[yellow]{event.get('signal')}: finished step {event.get('step')}, checkpoint "
                      f"{event.get('checkpoint') or '(none: nothing trained yet)'}[/yellow]")

    def _on_step(self, event: dict[str, Any]) -> None:
        info = f"loss {event['loss']:.4f}  lr {event['learning_rate']:.2e}  {event['tokens_per_second']:.0f} tok/s"
        task = self._task("train", "training", event["total_steps"])
        self.progress.update(task, completed=event["step"], info=info)
        if self.enabled and not self.live and (time.time() - self._last_line > 10 or event["step"] == event["total_steps"]):
            self._last_line = time.time()
            print(f"step {event['step']}/{event['total_steps']}  {info}", file=sys.stderr, flush=True)


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def issue_line(event: dict[str, Any]) -> str:
    """One detected issue for the terminal: severity, step, what happened, what was done, what to try."""
    style = SEVERITY_STYLE.get(str(event.get("severity")), "red")
    action = event.get("action")
    done = {"stop": " [training stops]", "rollback": " [rolling back]"}.get(str(action), "")
    return (f"[{style}]{event.get('severity')} at step {event.get('step')}: {event.get('kind')}{done}[/{style}]: "
            f"{event.get('message')}\n  [dim]try: {event.get('suggestion')}[/dim]")


def interrupted(result: dict[str, Any]) -> None:
    """How a run stopped by a signal ended, and the command that continues it."""
    train = result.get("train") or {}
    checkpoint = train.get("checkpoint")
    where = f"checkpoint {result['run_dir']}/{checkpoint}" if checkpoint else "no checkpoint (no step had finished)"
    # soft_wrap: the path and the command stay on one line, whole, for copying.
    console.print(f"[yellow]stopped by {train.get('interrupted')} after step {train.get('steps')}; {where}.[/yellow]", soft_wrap=True)
    console.print(f"continue with: [bold]tuneforge resume {result['run_dir']}[/bold]", soft_wrap=True)


def monitor_summary(run_dir: Any, ended: str | None) -> None:
    """The closing lines of ``tuneforge monitor``."""
    from pathlib import Path

    from tuneforge.core.status import RunStatus
    from tuneforge.runs import read_results

    saved = read_results(Path(run_dir)) if (Path(run_dir) / "results.json").is_file() else None
    if ended == "process_gone":
        console.print(f"[yellow]the run's process is gone without finishing (killed?); continue it with: "
                      f"tuneforge resume {run_dir}[/yellow]", soft_wrap=True)
    elif ended == "no_follow" and not saved:
        console.print("[dim]the run has not finished yet; `tuneforge monitor` without --no-follow follows it[/dim]")
    if saved and ended in ("finished", "no_follow"):
        saved.setdefault("run_dir", str(run_dir))
        if saved.get("status") == RunStatus.INTERRUPTED:
            interrupted(saved)
        elif saved.get("status") == RunStatus.SUCCEEDED:
            results(saved)
        else:
            console.print(f"status: [bold]{saved.get('status')}[/bold]" + (f" — {saved['error']}" if saved.get("error") else ""))


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def results(result: dict[str, Any]) -> None:
    """The base-vs-baselines-vs-tuned table, the verdict and the training figures of a finished run."""
    if result.get("cross_validation"):
        cross_validation(result["cross_validation"])
        out.print(f"run directory: [bold]{result['run_dir']}[/bold]  (results.json; each fold's run in fold-<i>/)")
        return
    columns = [("base", "base", result.get("base"), (result.get("evaluation") or {}).get("base"))]
    columns += [(name, b.get("label", name), b.get("performance"), b.get("resources"))
                for name, b in (result.get("baselines") or {}).items()]
    columns.append(("tuned", "tuned", result.get("tuned"), (result.get("evaluation") or {}).get("tuned")))
    also = " and prompting baselines" if result.get("baselines") else ""
    scores_table(f"base vs tuned{also} on the held-out test split ({result.get('task')})", columns)
    verdict = result.get("verdict")
    if verdict:
        colour = "green" if verdict.get("worth_it") else "yellow"
        out.print(f"[{colour}]verdict: {verdict['message']}[/{colour}]", soft_wrap=True)
    forgetting = result.get("forgetting")
    if forgetting:
        out.print(f"[{'yellow' if forgetting.get('forgot') else 'dim'}]forgetting: {forgetting['message']}[/]", soft_wrap=True)
    train = result.get("train") or {}
    resources = Table(title="training")
    resources.add_column("figure")
    resources.add_column("value", justify="right")
    issues = result.get("issues") or []
    if issues:
        table = Table(title=f"issues detected during training ({len(issues)})")
        for column in ("step", "severity", "kind", "action", "what happened"):
            table.add_column(column, overflow="fold")
        for issue in issues:
            table.add_row(str(issue.get("step")), str(issue.get("severity")), str(issue.get("kind")), str(issue.get("action", "")),
                          str(issue.get("message")))
        out.print(table)
    if train.get("stopped_early"):
        out.print(f"training stopped early at step {train['stopped_early']['step']}: {train['stopped_early']['reason']}")
    if train.get("best_step") is not None:
        used = "best" if train.get("final_weights_step") == train.get("best_step") else "last"
        out.print(f"best {train.get('best_metric')}: {_fmt(train.get('best_metric_value'))} at step {train['best_step']}; "
                  f"saved weights: the {used} (step {train.get('final_weights_step')})")
    for key, label in [("train_seconds", "training time (s)"), ("steps", "optimizer steps"), ("epochs", "epochs"),
                       ("trained_tokens", "trained (answer) tokens; pairs for dpo/orpo"), ("processed_tokens", "tokens processed"),
                       ("tokens_per_second", "tokens/s (all tokens)"),
                       ("peak_memory_mb", "peak memory (MB)"), ("final_train_loss", "final train loss"),
                       ("best_validation_loss", "best validation loss"), ("compute_cost", "compute cost")]:
        resources.add_row(label, _fmt(train.get(key)))
    out.print(resources)
    lineage = result.get("lineage")
    if lineage:
        out.print(f"continued from {lineage['parent_run']} ({lineage['parent_method']} on {lineage['parent_base']}, "
                  f"weights sha256 {lineage['parent_weights_sha256'][:12]}; generation {lineage['generation']})", soft_wrap=True)
    out.print(f"run directory: [bold]{result['run_dir']}[/bold]  (results.json, predictions.jsonl, adapter/ or model/)")


def scores_table(title: str, columns: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]]) -> None:
    """One table of every metric of ``columns`` (name, label, performance, resources), best in bold; a
    "tuned − base" column when both are there; prompt tokens and seconds per request under it."""
    from tuneforge.evaluate.compare import compare_models

    columns = [column for column in columns if column[2]]
    if not columns:
        return
    names = [name for name, *_ in columns]
    change = "base" in names and "tuned" in names
    table = Table(title=title)
    table.add_column("metric")
    for _, label, _, _ in columns:
        table.add_column(label, justify="right")
    if change:
        table.add_column("tuned − base", justify="right")
    for row in compare_models({name: performance for name, _, performance, _ in columns}):
        cells = [row["metric"]] + [("[bold]" if row.get("best") == name else "") + _fmt(row.get(name)) for name in names]
        if change:
            cells.append(f"{row['tuned'] - row['base']:+.4f}" if row.get("base") is not None and row.get("tuned") is not None else "")
        table.add_row(*cells)
    for key, label in (("prompt_tokens_per_request", "prompt tokens / request"), ("seconds_per_request", "seconds / request")):
        values = [(resources or {}).get(key) for *_, resources in columns]
        if any(value is not None for value in values):
            table.add_row(f"[dim]{label}[/dim]", *[_fmt(value) for value in values], *([""] if change else []))
    out.print(table)


def evaluation(description: str, data: dict[str, Any]) -> None:
    table = Table(title=f"{description} ({data['task']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in data["performance"].items():
        table.add_row(key, _fmt(value))
    for key, value in data["resources"].items():
        table.add_row(key, _fmt(value))
    out.print(table)


def evaluation_with_baselines(data: dict[str, Any]) -> None:
    """``tuneforge eval``: the model beside its base and the prompting baselines (when scored), and the verdict."""
    if data.get("base") is None and not data.get("baselines"):
        evaluation(data["model"], data)
        if data.get("baselines_skipped"):
            note(f"baselines skipped: {data['baselines_skipped']}")
        return
    trained = data.get("base") is not None
    columns = [("base", "base zero-shot", (data["base"] if trained else data)["performance"],
                (data["base"] if trained else data)["resources"])]
    columns += [(name, b.get("label", name), b.get("performance"), b.get("resources")) for name, b in data["baselines"].items()]
    if trained:
        columns.append(("tuned", "this model", data["performance"], data["resources"]))
    scores_table(f"{data['model']} ({data['task']}): {data['resources'].get('examples')} examples", columns)
    if data.get("baselines_skipped"):
        note(f"baselines skipped: {data['baselines_skipped']}")
    elif data.get("baselines"):
        shots = next(iter(data["baselines"].values())).get("shots")
        pool = data.get("pool") or {}
        dropped = f", {pool['dropped_as_scored']} left out as equal to a scored example" if pool.get("dropped_as_scored") else ""
        note(f"baselines: the base model with {shots} examples of {pool.get('examples')} training examples in the prompt{dropped}")
    if data.get("verdict"):
        colour = "green" if data["verdict"].get("worth_it") else "yellow"
        out.print(f"[{colour}]verdict: {data['verdict']['message']}[/{colour}]", soft_wrap=True)


def comparison(data: dict[str, Any], paths: dict[str, Any]) -> None:
    """``tuneforge compare``: every metric of every model, the pairwise tests, regressions, where the files are."""
    names = [model["name"] for model in data["models"]]
    table = Table(title=f"{len(names)} models on {data['data']}")
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right", overflow="fold")
    for row in data["table"]:
        table.add_row(row["metric"], *[("[bold]" if row.get("best") == n else "") + _fmt(row.get(n)) for n in names])
    out.print(table)
    if data["pairs"]:
        pairs = Table(title=f"paired tests on {data['metric']} (McNemar exact; 95 % CI: paired bootstrap)")
        for column in ("a", "b", "b − a", "only a right", "only b right", "p", "95 % CI of b − a"):
            pairs.add_column(column, justify="left" if column in ("a", "b") else "right", overflow="fold")
        for p in data["pairs"]:
            difference = "" if p["difference"] is None else f"{p['difference']:+.4f}"
            mark = " *" if p["significant"] else ""
            pairs.add_row(p["a"], p["b"], difference, str(p["only_a"]), str(p["only_b"]), f"{p['p_value']:.4g}{mark}",
                          f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]")
        out.print(pairs)
        out.print("[dim]* significant at p < 0.05[/dim]")
    for r in data["regressions"]:
        out.print(f"[bold red]regression: {r['model']} is worse than {r['baseline']} by {r['worse_by']:.4f} "
                  f"{r['metric']} ({r['value']:.4f} vs {r['baseline_value']:.4f}; allowed {r['tolerance']})[/bold red]")
    for name, verdict in (data.get("verdicts") or {}).items():
        colour = "green" if verdict.get("worth_it") else "yellow"
        out.print(f"[{colour}]verdict for {name}: {verdict['message']}[/{colour}]", soft_wrap=True)
    if data.get("baselines_skipped"):
        note(f"baselines skipped: {data['baselines_skipped']}")
    out.print(f"{data['disagreements']} example(s) where the models disagree; written: {paths['html']}, {paths['examples']}, "
              f"{paths['json']}", soft_wrap=True)


def cross_validation(data: dict[str, Any]) -> None:
    """Every metric of the K folds: mean ± sample standard deviation, base and tuned, and each fold's figure."""
    table = Table(title=f"{data['k']}-fold cross-validation (mean ± standard deviation)")
    table.add_column("metric")
    for name in ("base", "tuned"):
        if data.get(name):
            table.add_column(name, justify="right")
    table.add_column("tuned per fold", justify="right")
    tuned, base = data.get("tuned") or {}, data.get("base") or {}
    for metric in list(dict.fromkeys([*tuned, *base])):
        cells = [metric]
        for scores in (base, tuned):
            if scores:
                cells.append(f"{scores[metric]['mean']:.4f} ± {scores[metric]['std']:.4f}" if metric in scores else "—")
        cells.append(", ".join(f"{v:.3f}" for v in (tuned.get(metric) or {}).get("folds", [])))
        table.add_row(*cells)
    out.print(table)
