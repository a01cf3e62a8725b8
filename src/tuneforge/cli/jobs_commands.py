"""``tuneforge jobs create|list|show|events|cancel|pause|resume`` and ``tuneforge worker``: parse, call
``FineTuningManager`` / ``Worker``, render (rich tables, or ``--json``: the OpenAI wire objects)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

JOBS_EXAMPLES = """\
examples:
  tuneforge jobs create --data train.jsonl --epochs 2 --suffix mine     upload the file and queue a job
  tuneforge worker                                                      train queued jobs (one at a time)
  tuneforge jobs list                                                   newest first
  tuneforge jobs show ftjob-...                                         status, step / total, metrics, ETA
  tuneforge jobs events ftjob-... --follow                              the job's events as they happen
  tuneforge jobs pause ftjob-...  /  resume  /  cancel                  stops at a step with a checkpoint
  tuneforge jobs create --data train.jsonl --set lora_r=8 --set max_length=256   tuneforge's own settings

The store is SQLite under $TUNEFORGE_HOME unless --database-url (or $TUNEFORGE_DATABASE_URL) names another,
e.g. postgresql+psycopg://user:password@host/db shared by workers on several machines.
"""

WORKER_EXAMPLES = """\
examples:
  tuneforge worker                                          jobs from $TUNEFORGE_HOME/jobs.db, one at a time
  tuneforge worker --concurrency 2
  tuneforge worker --database-url postgresql+psycopg://tuneforge:secret@db-host/tuneforge --home /shared/tuneforge

Ctrl-C / SIGTERM: every running job saves a checkpoint and goes back to the queue; the next worker continues it.
"""


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None, metavar="URL",
                        help="SQLAlchemy URL of the job store (default: $TUNEFORGE_DATABASE_URL, else "
                             "sqlite:///$TUNEFORGE_HOME/jobs.db)")
    parser.add_argument("--home", default=None, metavar="DIR",
                        help="where uploaded files and job run directories go (default: $TUNEFORGE_HOME); "
                             "the same shared directory on every machine of a multi-machine queue")


def add_jobs_commands(subparsers: Any) -> None:
    """Register ``jobs`` (with its sub-commands) and ``worker`` on the ``tuneforge`` sub-command parser."""
    from tuneforge.cli.flags import bounded

    jobs = subparsers.add_parser(
        "jobs", help="fine-tuning jobs: create, list, show, events, cancel, pause, resume",
        description="Queue fine-tuning jobs and watch them; `tuneforge worker` (or `tuneforge serve`) trains them.",
        epilog=JOBS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="upload the data (or name an uploaded file-...) and queue a job")
    create.add_argument("--data", required=True, metavar="FILE", help="a .jsonl file, or the id of an uploaded file")
    create.add_argument("--validation-data", metavar="FILE", help="a .jsonl file or uploaded file id for validation")
    create.add_argument("--model", default=None, help="the base model (default: the embedded smollm2-135m-instruct)")
    create.add_argument("--epochs", type=bounded(int, ge=1), default=None, help="n_epochs (default: auto)")
    create.add_argument("--batch-size", type=bounded(int, ge=1), default=None, help="batch_size (default: auto)")
    create.add_argument("--learning-rate-multiplier", type=float, default=None,
                        help="× the training method's default learning rate (default: auto = 1)")
    create.add_argument("--suffix", default=None, help="goes into the model name ft:<base>:<suffix>:<job-id>")
    create.add_argument("--seed", type=bounded(int, ge=0), default=None)
    create.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a tuneforge config field (method, lora_r, max_length, ...), repeatable")
    _store_flags(create)
    create.add_argument("--json", action="store_true", help="print the job object as JSON")
    create.set_defaults(handler=cmd_jobs_create)

    listing = actions.add_parser("list", help="jobs, newest first")
    listing.add_argument("--limit", type=bounded(int, ge=1), default=20)
    listing.add_argument("--after", default=None, metavar="JOB_ID", help="the page after this job")
    _store_flags(listing)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_jobs_list)

    show = actions.add_parser("show", help="one job: status, step / total steps, epoch, metrics, ETA, issues")
    show.add_argument("job_id")
    _store_flags(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_jobs_show)

    events = actions.add_parser("events", help="the job's events, oldest first (--follow: until it ends)")
    events.add_argument("job_id")
    events.add_argument("--limit", type=bounded(int, ge=1), default=1000, help="at most this many of the newest events")
    events.add_argument("--follow", action="store_true", help="keep printing new events until the job ends")
    _store_flags(events)
    events.add_argument("--json", action="store_true", help="one event object per line")
    events.set_defaults(handler=cmd_jobs_events)

    for name, text in (("cancel", "stop a job for good (its checkpoint is kept)"),
                       ("pause", "stop a job at a step with a checkpoint; `resume` continues it exactly"),
                       ("resume", "queue a paused job again")):
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id")
        _store_flags(action)
        action.add_argument("--json", action="store_true")
        action.set_defaults(handler=cmd_jobs_action, action=name)

    worker = subparsers.add_parser(
        "worker", help="train queued jobs, each in its own process (no HTTP)",
        description="Claim queued jobs in order and train each in its own process; a killed job process or a dead "
                    "worker is noticed and the job continues from its last checkpoint.",
        epilog=WORKER_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    worker.add_argument("--concurrency", type=bounded(int, ge=1), default=1, help="jobs trained at once (default 1)")
    worker.add_argument("--stale-seconds", type=float, default=10.0,
                        help="a worker silent this long is taken as dead and its jobs continued elsewhere")
    _store_flags(worker)
    worker.set_defaults(handler=cmd_worker)


def _manager(args: argparse.Namespace) -> Any:
    from tuneforge.jobs import FineTuningManager

    return FineTuningManager(database_url=args.database_url or os.environ.get("TUNEFORGE_DATABASE_URL") or None,
                             home=args.home)


def _file_id(manager: Any, value: str | None, what: str) -> str | None:
    """An uploaded file id as given, or the id of ``value`` uploaded now (its findings shown if it has errors)."""
    from tuneforge.core.errors import DatasetError
    from tuneforge.jobs.ids import FILE_PREFIX, is_valid

    if value is None or is_valid(value, FILE_PREFIX):
        return value
    path = Path(value)
    if not path.is_file() or path.suffix.lower() != ".jsonl":
        raise DatasetError(f"{what}: {path} is not a .jsonl file; jobs train on JSONL files (or an uploaded file-... id). "
                           "Convert other data with: tuneforge prepare FILE --out DIR")
    with open(path, "rb") as handle:
        stored = manager.upload_file(handle, path.name)
    return stored.id


def _set_values(pairs: list[str]) -> dict[str, Any]:
    import yaml

    from tuneforge.core.errors import ConfigError

    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError([f"--set {pair!r}: write FIELD=VALUE, e.g. --set lora_r=8"])
        values[name.strip().replace("-", "_")] = yaml.safe_load(raw) if raw.strip() else None
    return values


def cmd_jobs_create(args: argparse.Namespace) -> int:
    manager = _manager(args)
    hyper = {key: value for key, value in (("n_epochs", args.epochs), ("batch_size", args.batch_size),
                                           ("learning_rate_multiplier", args.learning_rate_multiplier)) if value is not None}
    job = manager.create_job(_file_id(manager, args.data, "--data"), model=args.model,
                             validation_file=_file_id(manager, args.validation_data, "--validation-data"),
                             hyperparameters=hyper or None, suffix=args.suffix, seed=args.seed,
                             extra=_set_values(args.set) or None)
    if args.json:
        print(json.dumps(job.to_openai(), indent=2))
    else:
        _print_job(job)
        print(f"queued; a worker trains it: `tuneforge worker`. Follow it: tuneforge jobs events {job.id} --follow")
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    page = _manager(args).list_jobs(after=args.after, limit=args.limit)
    if args.json:
        print(json.dumps(page.to_openai(), indent=2))
        return 0
    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=30)  # an id is never cut: it is what the other commands take
    for column in ("status", "model", "created", "fine-tuned model"):
        table.add_column(column, overflow="fold")
    for job in page.data:
        wire = job.to_openai()
        table.add_row(job.id, wire["status"], job.model, _time(job.created_at), job.fine_tuned_model or "")
    _out().print(table)
    if page.has_more:
        print(f"more: tuneforge jobs list --after {page.data[-1].id}")
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    manager = _manager(args)
    job = manager.get_job(args.job_id)
    progress = manager.monitor_progress(job.id)
    if args.json:
        print(json.dumps({**job.to_openai(), "run_dir": str(job.run_dir), "progress": progress.to_dict()}, indent=2))
        return 0
    _print_job(job)
    if progress.total_steps:
        eta = f", about {progress.eta_seconds:.0f} s left" if progress.eta_seconds is not None else ""
        print(f"step {progress.step}/{progress.total_steps} (epoch {progress.epoch}){eta}")
    for name, value in progress.metrics.items():
        print(f"  {name}: {value:.4g}" if isinstance(value, float) else f"  {name}: {value}")
    for issue in progress.issues:
        print(f"  issue at step {issue.get('step')}: {issue.get('message')}")
    return 0


def cmd_jobs_events(args: argparse.Namespace) -> int:
    manager = _manager(args)
    job = manager.get_job(args.job_id)
    seen: set[str] = set()
    while True:
        fresh = [e for e in reversed(manager.list_events(job.id, limit=args.limit).data) if e["id"] not in seen]
        for event in fresh:
            seen.add(event["id"])
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                print(f"{_time(event['created_at'])}  {event['level']:5}  {event['message']}", flush=True)
        job = manager.get_job(job.id)
        if not args.follow or (job.status.is_terminal and not job.worker_id):
            return 0
        time.sleep(0.5)


def cmd_jobs_action(args: argparse.Namespace) -> int:
    manager = _manager(args)
    job = getattr(manager, args.action)(args.job_id)
    if args.json:
        print(json.dumps(job.to_openai(), indent=2))
    else:
        _print_job(job)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from tuneforge.cli import render
    from tuneforge.jobs import Worker

    manager = _manager(args)
    worker = Worker(manager, concurrency=args.concurrency, stale_seconds=args.stale_seconds)

    def stop(signum: int, _frame: Any) -> None:
        render.note(f"{signal.Signals(signum).name}: stopping; running jobs save a checkpoint and go back to the queue")
        worker.stop(wait=False)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    render.note(f"worker {worker.id} on {manager.store.engine.url.render_as_string(hide_password=True)}, "
                f"{args.concurrency} job(s) at a time; Ctrl-C stops it")
    try:
        worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _print_job(job: Any) -> None:
    wire = job.to_openai()
    print(f"{job.id}  {wire['status']}  model {job.model}")
    if job.fine_tuned_model:
        print(f"fine-tuned model: {job.fine_tuned_model}")
    if wire["error"]:
        print(f"error: {wire['error']['message']}")
    print(f"hyperparameters: {json.dumps(job.hyperparameters)}  seed {job.seed}  run directory {job.run_dir}")


def _out() -> Any:
    from rich.console import Console

    import sys

    return Console(width=None if sys.stdout.isatty() else 200)  # piped output: no wrapping at 80 columns


def _time(seconds: float | int) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")
