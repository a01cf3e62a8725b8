"""``tuneforge search``: parse, call ``tuneforge.search.run_search``, render the trials."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

STORAGE_ENV = "TUNEFORGE_SEARCH_STORAGE"  # the study's storage URL without putting its password in the process list
SEARCH_EXAMPLES = """\
search file (YAML): the search, next to any finetune config fields (the same in every trial):
  search_strategy: {type: tpe, num_trials: 20}         # random | tpe | grid; also pruner, objective, direction, seed
  search_space:
    learning_rate: {type: float, low: 1e-6, high: 1e-3, log: true}
    lora_r:        {type: int, low: 8, high: 64}
    batch_size:    {type: choice, values: [8, 16, 32]}
  data: train.jsonl

examples:
  tuneforge search --config search.yaml --output runs/lr-search
  tuneforge search --config search.yaml --output runs/lr-search        (again: continues the search where it stopped)
  tuneforge search --config search.yaml --name s1 --storage postgresql+psycopg://user:pw@db/optuna
  tuneforge search --join s1 --storage postgresql+psycopg://user:pw@db/optuna      (one more worker, any machine)
  tuneforge finetune --config runs/lr-search/best_config.yaml                      (train the best config)

writes SEARCH_DIR/study.db (the Optuna study, unless --storage), trial-NNNN/ (one run directory per
trial), trials.json, best_config.yaml, best_test.json (the best trial on the test split) and search.html.
exit status: 0 done; 1 the input failed (a message, no traceback); 75 interrupted (run it again to continue).
"""


def add_search_command(subparsers: Any) -> None:
    """Register ``search`` on the ``tuneforge`` sub-command parser."""
    from tuneforge.cli.flags import bounded
    from tuneforge.search.space import DIRECTIONS, PRUNERS, STRATEGIES

    search = subparsers.add_parser(
        "search", help="hyperparameter search with Optuna: trials as run directories, pruning, resumable, several workers",
        description="Search config fields (learning rate, LoRA rank, batch size, ...) with Optuna: each trial is a run "
        "directory, scored on the validation split; bad trials are pruned at an evaluation; the best config is written "
        "as a YAML that `tuneforge finetune --config` runs, and the best trial is scored on the test split.",
        epilog=SEARCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("--config", metavar="YAML", help="the search file (search_strategy, search_space, config fields)")
    search.add_argument("--join", metavar="NAME", help="add a worker to the existing search NAME (in --storage) instead")
    search.add_argument("--data", metavar="PATH", default=None, help="training data (overrides the file's data)")
    search.add_argument("--model", default=None, help="base model (overrides the file's model)")
    search.add_argument("--output", metavar="SEARCH_DIR", default=None, help="where the study and the trials go "
                        "(default: runs/NAME; with --join: where the first worker put them)")
    search.add_argument("--name", default=None, help="the study's name (default: the --output folder's name)")
    search.add_argument("--storage", metavar="URL", default=None, help="Optuna RDB storage URL (default: "
                        "$TUNEFORGE_SEARCH_STORAGE, which keeps a password off the command line, else "
                        "sqlite:///SEARCH_DIR/study.db); postgresql+psycopg://USER:PASSWORD@HOST/DB for several machines")
    search.add_argument("--num-trials", type=bounded(int, ge=1), default=None, metavar="N",
                        help="finished trials the study is to reach, over all workers (default: the file's, else 20; grid: its size)")
    search.add_argument("--timeout", type=bounded(float, gt=0), default=None, metavar="SECONDS",
                        help="stop starting trials after this long (this worker)")
    search.add_argument("--seed", type=bounded(int, ge=0), default=None, metavar="N", help="the sampler's seed")
    search.add_argument("--strategy", choices=STRATEGIES, default=None, help="override search_strategy.type")
    search.add_argument("--pruner", choices=PRUNERS, default=None, help="override search_strategy.pruner (default: median)")
    search.add_argument("--objective", default=None, metavar="METRIC",
                        help="what to optimise: validation_loss (default), validation_accuracy, validation_perplexity, "
                        "or an evaluation metric (accuracy, f1, exact_match, rouge, ...) scored on the validation split")
    search.add_argument("--direction", choices=DIRECTIONS, default=None, help="override the objective's inferred direction")
    search.add_argument("--keep-checkpoints", action="store_true", help="keep finished trials' checkpoints/ (default: removed)")
    search.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    jobs = search.add_argument_group("as a job (tuneforge worker runs it; tuneforge jobs show/events/pause/resume/cancel)")
    jobs.add_argument("--submit", action="store_true", help="queue the search as a job and print its id instead of running it")
    jobs.add_argument("--database-url", default=None, metavar="URL",
                      help="the job store (default: $TUNEFORGE_DATABASE_URL, else $TUNEFORGE_HOME/jobs.db)")
    jobs.add_argument("--home", default=None, metavar="DIR", help="tuneforge's home for jobs (default: $TUNEFORGE_HOME)")
    search.set_defaults(handler=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from tuneforge.core.errors import ConfigError
    from tuneforge.core.status import RunStatus
    from tuneforge.search.run import run_search

    if bool(args.config) == bool(args.join):
        raise ConfigError(["search: give either --config search.yaml (a search) or --join NAME (a worker on one)"])
    overrides = {"data": args.data, "model": args.model, "type": args.strategy, "pruner": args.pruner,
                 "objective": args.objective, "direction": args.direction}
    if args.join and any(v is not None for v in overrides.values()):
        raise ConfigError(["--join: a worker runs the study's own search; --data, --model, --strategy, --pruner, "
                           "--objective and --direction belong to the search file"])
    if args.submit:
        return _submit(args, overrides)
    progress = _Progress(enabled=not args.json)
    storage = args.storage or os.environ.get(STORAGE_ENV) or None
    result = run_search(args.config, output=args.output, name=args.name, storage=storage, join=args.join,
                        num_trials=args.num_trials, timeout=args.timeout, seed=args.seed, overrides=overrides,
                        on_event=progress.on_event, keep_checkpoints=args.keep_checkpoints)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        render_search(result.to_dict())
    return 75 if result.status == RunStatus.INTERRUPTED else 0


def _submit(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from tuneforge.core.errors import ConfigError
    from tuneforge.jobs import FineTuningManager
    from tuneforge.search.run import load_search

    if args.join or args.storage or args.name:
        raise ConfigError(["--submit: a search job keeps its study in its own directory under the job's id; "
                           "leave out --join, --storage and --name"])
    spec = load_search(args.config, {**overrides, "num_trials": args.num_trials, "timeout": args.timeout, "seed": args.seed})
    manager = FineTuningManager(database_url=args.database_url or os.environ.get("TUNEFORGE_DATABASE_URL") or None,
                                home=args.home)
    try:
        job = manager.start_search(spec, output=args.output)
    finally:
        manager.store.dispose()
    print(json.dumps(job.to_openai(), indent=2) if args.json else f"{job.id} queued: a search in {job.run_dir} "
          f"(tuneforge worker runs it; tuneforge jobs events {job.id})")
    return 0


class _Progress:
    """One line per trial as it starts and ends (the trials' own events stay in their run directories)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def on_event(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        kind = event.get("type")
        if kind == "search.started":
            print(f"search {event['study']}: {event['missing']} of {event['wanted']} trials to run", flush=True)
        elif kind == "search.trial_started":
            how = " (resuming its run)" if event.get("resume") else ""
            print(f"trial {event['trial']}{how}: {_params(event['params'])}", flush=True)
        elif kind == "search.trial_finished":
            print(f"trial {event['trial']}: {event['value']:.4g} in {event['seconds']:.0f} s", flush=True)
        elif kind == "search.trial_pruned":
            print(f"trial {event['trial']}: {event['reason']}", flush=True)
        elif kind == "search.trial_retried":
            print(f"trial {event['trial']} was left running by a process that is gone: tried again", flush=True)
        elif kind == "search.testing":
            print(f"scoring the best trial ({event['trial']}) on {event['examples']} test examples", flush=True)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_fmt(value)}" for name, value in params.items())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _value(row: dict[str, Any]) -> str:
    """The objective; a pruned trial's is only what it reported last, at its last step."""
    if row["state"] == "PRUNED" and row["value"] is not None:
        return f"{_fmt(row['value'])} (step {row['last_step']})"
    return _fmt(row["value"])


def render_search(result: dict[str, Any]) -> None:
    """The trials table (state, parameters, objective, time), the best trial, its test scores, the files."""
    trials = result["trials"]
    names = sorted({name for row in trials for name in row["params"]})
    header = ["trial", "state", *names, result["objective"], "seconds"]
    rows = [[str(row["number"]), row["state"].lower(), *[_fmt(row["params"].get(n)) for n in names], _value(row),
             _fmt(row["seconds"])] for row in trials]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    best = result.get("best")
    if best:
        print(f"\nbest: trial {best['number']}, {result['objective']} {best['value']:.4g} ({result['direction']}): "
              f"{_params(best['params'])}")
    test = result.get("test")
    if test:
        print(f"best trial on {test['examples']} test examples: "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in test["performance"].items()))
    if result.get("best_config"):
        print(f"best config: {result['best_config']}  (tuneforge finetune --config {result['best_config']})")
    if result.get("report"):
        print(f"report: {result['report']}")
    if result.get("message"):
        print(result["message"], file=sys.stderr if result["status"] == "interrupted" else sys.stdout)
