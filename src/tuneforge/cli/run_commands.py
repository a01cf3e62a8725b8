"""``tuneforge report`` and ``monitor``: what a run directory shows, rebuilt (report.html) or followed live."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tuneforge.cli.flags import bounded


def add_report_command(commands: argparse._SubParsersAction) -> None:
    """``tuneforge report RUN_DIR``: rebuild its report.html."""
    report = commands.add_parser(
        "report", help="write the HTML report of a run (curves, base vs tuned, issues, config)",
        description="Rebuild RUN_DIR/report.html from events.jsonl and results.json; works on running runs too.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a tuneforge run directory")
    report.set_defaults(handler=cmd_report)


def add_monitor_command(commands: argparse._SubParsersAction) -> None:
    """``tuneforge monitor RUN_DIR``: follow its events live (or replay them)."""
    monitor = commands.add_parser(
        "monitor", help="follow a run live in the terminal: progress, evaluations, checkpoints, detected issues",
        description="Follow RUN_DIR/events.jsonl as the run writes it, until the run finishes (or its process is "
        "gone); on a finished run, replay it and print the summary. Ctrl-C stops watching, not the run.",
    )
    monitor.add_argument("run_dir", metavar="RUN_DIR", help="a tuneforge run directory")
    monitor.add_argument("--no-follow", action="store_true", help="show what has been written so far and exit")
    monitor.add_argument("--json", action="store_true", help="print the events as JSON lines instead")
    monitor.add_argument("--interval", type=bounded(float, gt=0, le=3600), default=0.5, metavar="SECONDS", help="how often to look for new events (default: 0.5)")
    monitor.set_defaults(handler=cmd_monitor)


def cmd_report(args: argparse.Namespace) -> int:
    from tuneforge.core.errors import CheckpointError
    from tuneforge.report import write_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "events.jsonl").is_file() and not (run_dir / "results.json").is_file():  # a cross-validation root has only results
        raise CheckpointError(f"{run_dir} is not a tuneforge run directory (no events.jsonl)")
    print(write_report(run_dir))
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from tuneforge.cli import render
    from tuneforge.core.errors import CheckpointError
    from tuneforge.runs import RunFollower

    run_dir = Path(args.run_dir)
    if not (run_dir / "events.jsonl").is_file():
        raise CheckpointError(f"{run_dir} is not a tuneforge run directory (no events.jsonl)")
    follower = RunFollower(run_dir, follow=not args.no_follow, poll_seconds=args.interval)
    if args.json:
        for event in follower.events():
            print(json.dumps(event), flush=True)
        return 0
    with render.TrainingProgress() as progress:
        for event in follower.events():
            progress.on_event(event)
    render.monitor_summary(run_dir, follower.ended)
    return 0
