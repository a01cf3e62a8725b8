"""``tuneforge``: the command line. Each command parses its flags, calls one library function and renders.

Exit codes: 0 success, 1 the input or the run failed (a clear message, no traceback), 2 wrong usage,
75 training stopped by SIGINT/SIGTERM after saving a checkpoint (continue with ``tuneforge resume``),
130 stopped at once (a second signal, or a signal outside training).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, get_args, get_origin

EXAMPLES = """\
examples:
  tuneforge finetune --data my.jsonl                      LoRA on the embedded SmolLM2-135M-Instruct
  tuneforge finetune --data my.jsonl --epochs 2 --output runs/mine
  tuneforge finetune --config run.yaml --learning-rate 5e-4   a YAML config; flags override it
  tuneforge eval --data test.jsonl --adapter runs/mine    score a trained run on your data
  tuneforge chat --adapter runs/mine --prompt "Hello"     talk to a trained run
  tuneforge report runs/mine                              rebuild runs/mine/report.html
  tuneforge monitor runs/mine                             follow a running run live (or replay a finished one)
  tuneforge resume runs/mine                              continue an interrupted run exactly where it stopped
  tuneforge finetune --data my.jsonl --nproc 2            train in 2 processes (DDP: gloo on CPU, NCCL on GPUs)
  tuneforge finetune --data my.jsonl --method full --nproc 2 --distributed fsdp   ... the model sharded (FSDP)
  tuneforge validate my.jsonl --model smollm2-135m-instruct   the data doctor: every problem, token counts
  tuneforge demo                                          the bundled example task, end to end
  tuneforge search --config search.yaml                   hyperparameter search with Optuna (trials, pruning, best config)
"""

EXIT_STOPPED_BY_SIGNAL = 75  # EX_TEMPFAIL: stopped cleanly with a checkpoint; try again with `tuneforge resume`
EXIT_CODES = """\
exit status: 0 success; 1 the input or the run failed (a message, no traceback); 2 wrong usage;
  75 stopped by Ctrl-C/SIGTERM: the current step was finished and a checkpoint saved
     (continue with: tuneforge resume RUN_DIR); 130 stopped at once by a second signal.
"""

DATA_HELP = """\
data files: .jsonl .json .csv .parquet, or a directory saved with datasets' save_to_disk.
row formats (auto-detected; force one with --data-format):
{formats}
The loss is taken on the answers only (the end-of-turn token included) unless --train-on-prompt.
"""


def _data_help() -> str:
    """DATA_HELP with the row formats of the registry (data/row_formats/), each with a sample row."""
    from tuneforge.data.row_formats import formats_help

    return DATA_HELP.format(formats=formats_help())


def _quiet_libraries() -> None:
    """Keep third-party progress bars and advice off the user's terminal; tuneforge reports itself."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # GGUF conversion and weight-loading bars use tqdm directly
    import warnings

    warnings.filterwarnings("ignore")



def _config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``FineTuningConfig`` field, named in kebab case, documented from the schema."""
    from tuneforge.config import AUTO_FIELDS, DEFAULT_LEARNING_RATE, FineTuningConfig, method_option_owners
    from tuneforge.core.registries import METHODS, OBJECTIVES, SINKS

    # Fields whose values are registry names (or module:attribute plug-ins): their help lists the names.
    REGISTRY_FIELDS = {"method": METHODS, "objective": OBJECTIVES, "report_to": SINKS}

    groups = {
        "data": parser.add_argument_group("data"),
        "model": parser.add_argument_group("model and method"),
        "train": parser.add_argument_group("training"),
        "eval": parser.add_argument_group("evaluation and saving"),
        "watch": parser.add_argument_group("health monitor, early stopping, best checkpoint, resume"),
    }
    sections = {
        "data": {"data", "validation_data", "test_data", "data_format", "text_template", "validation_split", "test_split", "train_on_prompt", "max_length", "skip_invalid"},
        "model": {"model", "method", "trust_remote_code", "adapter_name", "init_from", *method_option_owners()},
        "watch": {"best_metric", "final_weights", "early_stopping", "early_stopping_patience", "early_stopping_min_delta",
                  "on_issue", "rollback_lr_factor", "max_rollbacks", "report_to", "resume"},
        "eval": {"evaluation_strategy", "eval_steps", "saving_strategy", "save_steps", "save_total_limit", "logging_steps",
                 "evaluation_metrics", "json_schema", "evaluate_base", "baselines", "baseline_shots", "baseline_retriever", "forgetting_check", "cross_validation", "judge", "judge_rubric", "max_eval_examples", "max_new_tokens", "cost_per_hour", "output", "name"},
    }
    for name, field in FineTuningConfig.model_fields.items():
        section = next((key for key, names in sections.items() if name in names), "train")
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        choices = _literal_choices(annotation)
        takes_auto = name in AUTO_FIELDS  # a number (or flag) that defaults to auto: chosen from the data
        if takes_auto:
            choices = []
        default = field.default if field.default_factory is None else field.default_factory()
        if name == "learning_rate":
            default = ", ".join(f"{rate} ({method})" for method, rate in DEFAULT_LEARNING_RATE.items())
        text = field.description or ""
        if choices:
            text = (text + "; " if text else "") + "one of: " + ", ".join(choices)
        elif name in REGISTRY_FIELDS:
            registered = REGISTRY_FIELDS[name].names()
            text = (text + "; " if text else "") + "registered: " + (", ".join(registered) or "none")
        text = (f"{text} (default: {default})" if text else f"default: {default}").replace("%", "%%")
        if annotation is bool or (takes_auto and bool in _plain_types(annotation)):
            groups[section].add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif _is_list(annotation):
            groups[section].add_argument(flag, dest=name, default=None, metavar="A,B", help=text + " (comma-separated)")
        else:
            metavar = "NAME" if name in REGISTRY_FIELDS else _metavar(name, annotation, choices)
            metavar += "|auto" if takes_auto else ""
            groups[section].add_argument(flag, dest=name, default=None, metavar=metavar, help=text)


def _plain_types(annotation: Any) -> set[Any]:
    """The types in ``annotation`` with ``Annotated`` limits taken off: ``Annotated[int, ...] | Literal['auto']`` -> {int, Literal}."""
    return {get_args(arg)[0] if get_origin(arg) is Annotated else arg for arg in (get_args(annotation) or (annotation,))}


def _metavar(name: str, annotation: Any, choices: list[str]) -> str:
    if name == "on_issue":
        return "KIND=ACTION,..."
    if choices:
        return "{" + ",".join(choices) + "}"
    if name in ("data", "validation_data", "test_data", "output"):
        return "PATH"
    kinds = {int, float} & ({annotation} | _plain_types(annotation))
    return "N" if kinds == {int} else "X" if kinds else "TEXT"


def _literal_choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is None:
        return []
    choices: list[str] = []
    for arg in get_args(annotation):
        if get_origin(arg) is not None and str(get_origin(arg)).endswith("Literal"):
            choices += [str(a) for a in get_args(arg)]
        elif isinstance(arg, str):
            choices.append(arg)
    return choices


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(get_origin(arg) is list for arg in get_args(annotation))


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from tuneforge.config import FineTuningConfig

    overrides: dict[str, Any] = {}
    for name, field in FineTuningConfig.model_fields.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if _is_list(field.annotation) and isinstance(value, str) and value != "all-linear":
            value = [item.strip() for item in value.split(",") if item.strip()]
        overrides[name] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneforge",
        description="Fine-tune pre-trained language models on your own examples, on your own machine.",
        epilog=EXAMPLES + "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an unexpected error "
                        "(otherwise it goes to RUN_DIR/error.log or $TUNEFORGE_HOME/logs/)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from tuneforge.cli.flags import add_format_flags, bounded, config_value, metric_names
    from tuneforge.cli.data_commands import add_data_commands
    add_data_commands(commands)
    from tuneforge.cli.serve_command import add_serve_command
    add_serve_command(commands)
    from tuneforge.cli.adapters_commands import add_adapters_commands
    add_adapters_commands(commands)
    from tuneforge.cli.export_command import add_export_command
    add_export_command(commands)
    from tuneforge.cli.jobs_commands import add_jobs_commands
    add_jobs_commands(commands)
    from tuneforge.cli.compare_command import add_compare_command
    add_compare_command(commands)
    from tuneforge.cli.search_command import add_search_command
    add_search_command(commands)

    finetune = commands.add_parser(
        "finetune", help="validate data, train, evaluate base and tuned, write the run directory",
        description="Fine-tune a model on your data. Splits off validation and test sets (unless given), "
        "evaluates the base model, trains, evaluates the tuned model and writes runs/<name>/ with "
        "config.yaml, events.jsonl, checkpoints/, adapter/ (or model/), results.json and predictions.jsonl.",
        epilog=_data_help() + "\n" + EXAMPLES + "\n" + EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    finetune.add_argument("--config", metavar="YAML", help="a YAML file of config fields; flags given here override it "
                          "(with --resume: default RUN_DIR/config.yaml of --output)")
    finetune.add_argument("--json", action="store_true", help="print results.json instead of tables")
    _nproc_flag(finetune)
    _config_flags(finetune)
    finetune.set_defaults(handler=cmd_finetune)

    evaluate = commands.add_parser(
        "eval", help="evaluate a model (optionally a trained run or adapter) on a dataset",
        description="Score a model on every example of a data file: loss, perplexity, and generated answers "
        "(accuracy/precision/recall/F1 for label tasks, exact match/BLEU/ROUGE-L for free text). Beside it, on the "
        "same examples: with --adapter its base model, and (with training examples to show: the run's train split or "
        "--train) the prompting baselines, few-shot and BM25 retrieval few-shot, each with its prompt tokens and "
        "seconds per request, and the verdict: does the tuned model beat the best of them?",
        epilog=_data_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--data", required=True, help="the examples to score")
    _model_flags(evaluate)
    add_format_flags(evaluate)
    evaluate.add_argument("--max-examples", type=config_value("max_eval_examples"), default=None, metavar="N",
                          help="score only the first N examples (default: all)")
    evaluate.add_argument("--max-length", type=config_value("max_length"), default=512, metavar="N",
                          help="tokens per example (default: 512)")
    evaluate.add_argument("--batch-size", type=config_value("batch_size"), default=8, metavar="N",
                          help="examples per batch (default: 8)")
    evaluate.add_argument("--max-new-tokens", type=config_value("max_new_tokens"), default=64, metavar="N",
                          help="answer length limit (default: 64)")
    evaluate.add_argument("--predictions", metavar="JSONL", help="also write every prediction to this file")
    evaluate.add_argument("--evaluation-metrics", type=metric_names, default=None, metavar="A,B",
                          help="the metrics to score (registered names or module:function plug-ins; default: the "
                          "finetune default, accuracy,precision,recall,f1,loss,perplexity,bleu,rouge)")
    evaluate.add_argument("--json-schema", metavar="FILE", default=None,
                          help="a JSON Schema the answers must conform to (scored as json_schema) for every example "
                          "without its own metadata.json_schema")
    evaluate.add_argument("--no-baselines", dest="baselines", action="store_false",
                          help="score only the model (and, with --adapter, its base): no few-shot or retrieval baselines")
    evaluate.add_argument("--train", metavar="FILE", default=None,
                          help="the examples baselines draw their shots from (default: the --adapter run's data/train.jsonl); "
                          "examples equal to one of --data are left out")
    evaluate.add_argument("--shots", type=config_value("baseline_shots"), default=5, metavar="K",
                          help="training examples in a baseline's prompt (default: 5)")
    evaluate.add_argument("--retriever", choices=["bm25"], default="bm25",
                          help="how retrieval few-shot finds the training examples most like each input (default: bm25)")
    evaluate.add_argument("--seed", type=int, default=None, help="the few-shot draw (default: the run's seed, else 42)")
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    evaluate.set_defaults(handler=cmd_eval)

    chat = commands.add_parser(
        "chat", help="talk to a base model or a trained run",
        description="Greedy chat with a model. With --prompt, answer once and exit; otherwise an interactive "
        "session (an empty line or Ctrl-D ends it).",
    )
    _model_flags(chat)
    chat.add_argument("--prompt", help="answer this one message and exit")
    chat.add_argument("--system", help="a system message to start the conversation with")
    chat.add_argument("--max-new-tokens", type=config_value("max_new_tokens"), default=256, metavar="N",
                      help="answer length limit (default: 256)")
    chat.set_defaults(handler=cmd_chat)

    report = commands.add_parser(
        "report", help="write the HTML report of a run (curves, base vs tuned, issues, config)",
        description="Rebuild RUN_DIR/report.html from events.jsonl and results.json; works on running runs too.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a tuneforge run directory")
    report.set_defaults(handler=cmd_report)

    resume = commands.add_parser(
        "resume", help="continue an interrupted run exactly where it stopped",
        description="Continue RUN_DIR from its newest intact checkpoint (corrupt ones are skipped, with the reason): "
        "weights or adapter, optimizer, schedule, random-number generators and the exact data position are restored, "
        "so the result equals an uninterrupted run. The run's own config.yaml is used.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of an interrupted, killed or failed run")
    resume.add_argument("--json", action="store_true", help="print results.json instead of tables")
    _nproc_flag(resume)
    resume.add_argument("--distributed", choices=["ddp", "fsdp"], default=None,
                        help="how the processes share the training from here on (default: the run's own); a checkpoint "
                        "of either resumes under the other or in one process")
    resume.set_defaults(handler=cmd_resume)

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

    demo = commands.add_parser(
        "demo", help="fine-tune the embedded model on the bundled customer-intent task and compare with the base",
        description="The bundled example: 360 customer messages labelled with 8 intents. Trains LoRA on "
        "SmolLM2-135M-Instruct, then prints base vs tuned on the held-out test split.",
    )
    demo.add_argument("--output", default=None, help="run directory (default: runs/demo-<time>)")
    demo.add_argument("--epochs", type=config_value("epochs"), default=None, metavar="X",
                      help="passes over the training split (default: 1)")
    demo.add_argument("--json", action="store_true", help="print results.json instead of tables")
    demo.set_defaults(handler=cmd_demo)
    for command in commands.choices.values():  # --debug also after the command name
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="base model (default: the run's base, else smollm2-135m-instruct)")
    parser.add_argument("--adapter", metavar="RUN_DIR", default=None, help="a tuneforge run directory or a PEFT adapter directory")


def _nproc_flag(parser: argparse.ArgumentParser) -> None:
    from tuneforge.cli.flags import bounded

    parser.add_argument("--nproc", type=bounded(int, ge=1), default=None, metavar="N",
                        help="train in N processes on this machine through torchrun (data parallel: gloo on CPUs, NCCL "
                        "on GPUs; batch sizes stay global); not needed under torchrun or accelerate launch")


def _launch(args: argparse.Namespace, run_dir: Path) -> int | None:
    """With ``--nproc N`` > 1 (and not already one of several processes): this command again in N processes under
    torchrun, and its exit status; None: run here."""
    from tuneforge.train.distributed import launch_local, world_from_env

    if not args.nproc or args.nproc < 2 or world_from_env().active:
        return None
    argv = _without_nproc(args.argv)  # torchrun would take --nproc for its own --nproc-per-node
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


def _without_nproc(argv: list[str]) -> list[str]:
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


def _version() -> str:
    from tuneforge.core.version import __version__

    return f"tuneforge {__version__}"


def cmd_finetune(args: argparse.Namespace) -> int:
    from tuneforge.config import load_config

    config_file = args.config
    if args.resume and config_file is None and args.output and (Path(args.output) / "config.yaml").is_file():
        config_file = Path(args.output) / "config.yaml"  # resume takes the run's own settings
    config = load_config(config_file, _config_overrides(args))
    if args.nproc:
        from tuneforge.pipeline import default_run_dir

        launched = _launch(args, Path(config.output) if config.output else default_run_dir(config))
        if launched is not None:
            return launched
    return _run_finetune(config, args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    from tuneforge.config import load_config
    from tuneforge.core.errors import CheckpointError

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} is not a tuneforge run directory (no config.yaml); nothing to resume")
    overrides = {"output": str(run_dir), "resume": True, **({"distributed": args.distributed} if args.distributed else {})}
    config = load_config(run_dir / "config.yaml", overrides)
    launched = _launch(args, run_dir) if args.nproc else None
    return launched if launched is not None else _run_finetune(config, args.json)


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


def cmd_demo(args: argparse.Namespace) -> int:
    from tuneforge.samples import demo_config

    config = demo_config(output=args.output, epochs=args.epochs)
    return _run_finetune(config, args.json)


def _run_finetune(config: Any, as_json: bool) -> int:
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


def cmd_eval(args: argparse.Namespace) -> int:
    from tuneforge.cli import render
    from tuneforge.data.manager import TrainingDataManager
    from tuneforge.config import FineTuningConfig
    from tuneforge.evaluate.worth_it import evaluate_with_baselines

    examples, _ = TrainingDataManager(args.data_format, args.text_template).load(args.data)
    if args.max_examples is not None:
        examples = examples[: args.max_examples]
    train = TrainingDataManager(args.data_format, args.text_template).load(args.train)[0] if args.train else None
    metrics = args.evaluation_metrics or list(FineTuningConfig.model_fields["evaluation_metrics"].default_factory())
    if args.json_schema:
        from tuneforge.evaluate.answer_checks import load_json_schema, with_json_schema

        examples = with_json_schema(examples, load_json_schema(args.json_schema))
        metrics = list(dict.fromkeys([*metrics, "json_schema"]))
    what = f"{args.adapter or args.model or 'the base model'}" + (" with the base and prompting baselines" if args.baselines else "")
    with render.Spinner(f"evaluating {what} on {len(examples)} examples", enabled=not args.json):
        found = evaluate_with_baselines(examples, adapter=args.adapter, model=args.model, train=train, baselines=args.baselines,
                                        shots=args.shots, retriever=args.retriever, seed=args.seed, max_length=args.max_length,
                                        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, metrics=metrics)
    if args.predictions:
        from tuneforge.core.paths import atomic_write_text

        atomic_write_text(Path(args.predictions), "".join(json.dumps(p) + "\n" for p in found.evaluation.predictions))
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
    else:
        render.evaluation_with_baselines(found.to_dict())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tuneforge.core.errors import CheckpointError
    from tuneforge.report import write_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "events.jsonl").is_file() and not (run_dir / "results.json").is_file():  # a cross-validation root has only results
        raise CheckpointError(f"{run_dir} is not a tuneforge run directory (no events.jsonl)")
    print(write_report(run_dir))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tuneforge.cli import render
    from tuneforge.evaluate.chat import ChatSession
    from tuneforge.runs import load_trained

    model, tokenizer, description = load_trained(args.adapter, args.model)
    session = ChatSession(model, tokenizer, system=args.system, max_new_tokens=args.max_new_tokens)
    if args.prompt is not None:
        print(session.reply(args.prompt))
        return 0
    render.note(f"chatting with {description}; an empty line or Ctrl-D ends")
    while True:
        try:
            message = input("you> ")
        except EOFError:
            break
        if not message.strip():
            break
        print(f"model> {session.reply(message)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tuneforge`` command.

    No error reaches the user as a Python traceback: a ``TuneforgeError`` prints its message; any
    other exception prints what failed and what to try, and its traceback goes to the run
    directory's ``error.log`` (or ``$TUNEFORGE_HOME/logs/``), or to the terminal with ``--debug``.
    """
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --nproc starts this very command in N processes
    from tuneforge.core.errors import TuneforgeError

    handler: Callable[[argparse.Namespace], int] = args.handler
    debug = bool(getattr(args, "debug", False)) or os.environ.get("TUNEFORGE_DEBUG", "") not in ("", "0")
    try:
        return handler(args)
    except TuneforgeError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopped at once. A run directory keeps its last complete checkpoint; "
              "continue it with: tuneforge resume RUN_DIR", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`tuneforge monitor --json | head`): not an error of ours
        try:  # Python's recipe: point stdout at devnull so the flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout is not a real file (captured): nothing to redirect
            pass
        return 1
    except Exception as error:  # a bug, out of memory, a broken install: a message, the traceback in a log
        return _unexpected_failure(error, args.command, debug)


def _unexpected_failure(error: Exception, command: str, debug: bool) -> int:
    """Print one message for an exception nobody foresaw; keep its traceback where ``--debug`` or a log shows it."""
    from tuneforge.core.failures import describe_failure, is_out_of_memory, logged_at, write_error_log

    message = describe_failure(error, f"tuneforge {command}")
    if debug:
        traceback.print_exc()
        where = "the traceback is above"
    else:
        log = logged_at(error) or write_error_log(error)
        where = f"the full traceback is in {log}" if log else "run again with --debug to see the traceback"
    advice = "" if is_out_of_memory(error) else (
        "; if it happens again, run with --debug and report it with the traceback")
    print(f"error: {message}\n  {where}{advice}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
