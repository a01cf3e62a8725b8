"""``tuneforge finetune``, ``resume`` and ``demo``: a fine-tuning run, shown live, in one process or N (``--nproc``).

Exit status 75 (``EXIT_STOPPED_BY_SIGNAL``) when a signal stopped training after saving a checkpoint:
``tuneforge resume RUN_DIR`` continues it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tuneforge.cli.config_flags import config_flags, config_overrides
from tuneforge.cli.flags import bounded, config_value
from tuneforge.cli.help_text import EXAMPLES, EXIT_CODES, EXIT_STOPPED_BY_SIGNAL, data_help


def add_finetune_command(commands: argparse._SubParsersAction) -> None:
    """``tuneforge finetune``: the config's flags, ``--config YAML``, ``--nproc N``."""
    finetune = commands.add_parser(
        "finetune", help="validate data, train, evaluate base and tuned, write the run directory",
        description="Fine-tune a model on your data. Splits off validation and test sets (unless given), "
        "evaluates the base model, trains, evaluates the tuned model and writes runs/<name>/ with "
        "config.yaml, events.jsonl, checkpoints/, adapter/ (or model/), results.json and predictions.jsonl.",
        epilog=data_help() + "\n" + EXAMPLES + "\n" + EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    finetune.add_argument("--config", metavar="YAML", help="a YAML file of config fields; flags given here override it "
                          "(with --resume: default RUN_DIR/config.yaml of --output)")
    finetune.add_argument("--json", action="store_true", help="print results.json instead of tables")
    nproc_flag(finetune)
    config_flags(finetune)
    finetune.set_defaults(handler=cmd_finetune)


def add_resume_command(commands: argparse._SubParsersAction) -> None:
    """``tuneforge resume RUN_DIR``: the run's own config.yaml."""
    resume = commands.add_parser(
        "resume", help="continue an interrupted run exactly where it stopped",
        description="Continue RUN_DIR from its newest intact checkpoint (corrupt ones are skipped, with the reason): "
        "weights or adapter, optimizer, schedule, random-number generators and the exact data position are restored, "
        "so the result equals an uninterrupted run. The run's own config.yaml is used.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of an interrupted, killed or failed run")
    resume.add_argument("--json", action="store_true", help="print results.json instead of tables")
    nproc_flag(resume)
    resume.add_argument("--distributed", choices=["ddp", "fsdp"], default=None,
                        help="how the processes share the training from here on (default: the run's own); a checkpoint "
                        "of either resumes under the other or in one process")
    resume.set_defaults(handler=cmd_resume)


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    """``tuneforge demo``: the bundled customer-intent task."""
    demo = commands.add_parser(
        "demo", help="fine-tune the embedded model on the bundled customer-intent task and compare with the base",
        description="The bundled example: 360 customer messages labelled with 8 intents. Trains LoRA on "
        "SmolLM2-135M-Instruct with the hyperparameters chosen from the data (auto, printed before training), "
        "then prints base vs tuned on the held-out test split.",
    )
    demo.add_argument("--output", default=None, help="run directory (default: runs/demo-<time>)")
    demo.add_argument("--epochs", type=config_value("epochs"), default=None, metavar="X",
                      help="passes over the training split (default: auto, chosen from the data)")
    demo.add_argument("--json", action="store_true", help="print results.json instead of tables")
    demo.set_defaults(handler=cmd_demo)


def cmd_finetune(args: argparse.Namespace) -> int:
    from tuneforge.config import load_config

    config_file = args.config
    if args.resume and config_file is None and args.output and (Path(args.output) / "config.yaml").is_file():
        config_file = Path(args.output) / "config.yaml"  # resume takes the run's own settings
    config = load_config(config_file, config_overrides(args))
    if args.nproc:
        from tuneforge.pipeline import default_run_dir

        launched = launch(args, Path(config.output) if config.output else default_run_dir(config))
        if launched is not None:
            return launched
    return run_finetune(config, args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    from tuneforge.config import load_config
    from tuneforge.core.errors import CheckpointError

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} is not a tuneforge run directory (no config.yaml); nothing to resume")
    overrides = {"output": str(run_dir), "resume": True, **({"distributed": args.distributed} if args.distributed else {})}
    config = load_config(run_dir / "config.yaml", overrides)
    launched = launch(args, run_dir) if args.nproc else None
    return launched if launched is not None else run_finetune(config, args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from tuneforge.samples import demo_config

    config = demo_config(output=args.output, epochs=args.epochs)
    return run_finetune(config, args.json)


def run_finetune(config: Any, as_json: bool) -> int:
    from tuneforge.cli import render
    from tuneforge.core.status import RunStatus
    from tuneforge.pipeline import FineTuningPipeline

    from tuneforge.train.distributed import is_main_process

    if not is_main_process():  # one of several processes, not rank 0: it trains; rank 0 shows and writes
        result = FineTuningPipeline(config).train()
        return EXIT_STOPPED_BY_SIGNAL if result.status == RunStatus.INTERRUPTED else 0
    with render.TrainingProgress(enabled=not as_json) as progress:
        result = FineTuningPipeline(config, on_event=progress.on_event).train()
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.status != RunStatus.INTERRUPTED:
        render.results(result.to_dict())
    if result.status == RunStatus.INTERRUPTED:
        render.interrupted(result.to_dict())
        return EXIT_STOPPED_BY_SIGNAL
    return 0


def nproc_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=bounded(int, ge=1), default=None, metavar="N",
                        help="train in N processes on this machine through torchrun (data parallel: gloo on CPUs, NCCL "
                        "on GPUs; batch sizes stay global; --distributed fsdp shards the model); not needed under torchrun or "
                        "accelerate launch")


def launch(args: argparse.Namespace, run_dir: Path) -> int | None:
    """With ``--nproc N`` > 1 (and not already one of several processes): this command again in N processes under
    torchrun, and its exit status; None: run here."""
    from tuneforge.train.distributed import launch_local, world_from_env

    if not args.nproc or args.nproc < 2 or world_from_env().active:
        return None
    argv = without_nproc(args.argv)  # torchrun would take --nproc for its own --nproc-per-node
    if args.command == "finetune" and not args.output:
        argv += ["--output", str(run_dir)]  # every process must write (and later resume) the same run directory
    status = launch_local(args.nproc, ["tuneforge.cli.main", *argv])
    try:
        finished = json.loads((run_dir / "results.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        finished = None
    if finished == "interrupted":
        return EXIT_STOPPED_BY_SIGNAL
    if status == 0:
        return 0
    if (run_dir / "checkpoints").is_dir():
        print(f"error: the run's processes stopped (torchrun exit status {status}; see the messages above); "
              f"{run_dir} keeps its newest complete checkpoint: continue with: "
              f"tuneforge resume {run_dir} --nproc {args.nproc}", file=sys.stderr)
    return 1


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N`` (or an abbreviation of it)."""
    kept: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token.startswith("--npr") and "--nproc".startswith(token.split("=", 1)[0]):
            skip = "=" not in token
        else:
            kept.append(token)
    return kept
