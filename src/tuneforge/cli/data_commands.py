"""``tuneforge validate`` (the data doctor) and ``tuneforge prepare``: parse flags, call the library, render.

``validate`` exits 1 when the data has any error, else 0 (warnings do not fail it).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

VALIDATE_EXAMPLES = """\
examples:
  tuneforge validate train.jsonl                          every problem with file:line, and statistics
  tuneforge validate train.jsonl --model smollm2-135m-instruct --max-length 256
                                                          token counts with the model's chat template
  tuneforge validate train.jsonl --show-tokens 3          print 3 examples with the trained tokens marked
  tuneforge validate train.jsonl --estimate-time --cost-per-hour 1.2
                                                          time a few training steps here; estimate time and cost
  tuneforge validate train.jsonl --json                   the same findings as JSON
  tuneforge validate train.jsonl --report data.html       a self-contained HTML page with charts
  tuneforge validate prepared/                            a directory of train/validation/test files

exit status: 0 no errors (warnings allowed), 1 errors found, 2 wrong usage.
"""

PREPARE_EXAMPLES = """\
examples:
  tuneforge prepare raw.jsonl --out data/                 clean and split 0.8/0.1/0.1
  tuneforge prepare raw.csv --out data/ --dedup --near-dup 0.9 --split 0.9,0.1
  tuneforge prepare raw.jsonl --out data/ --stratify label --balance oversample --seed 7
  tuneforge prepare raw.jsonl --out data/ --augment typo,lowercase

augmentation methods (train split only; they change the prompt, never the answer):
  typo       swap two adjacent letters in one word     lowercase  lower-case the prompt
  no-punct   remove . , ; : ! ? from the prompt
"""


def add_data_commands(subparsers: Any) -> None:
    """Register ``validate`` and ``prepare`` on the ``tuneforge`` sub-command parser."""
    from tuneforge.cli.flags import add_format_flags, bounded, config_value
    validate = subparsers.add_parser(
        "validate", help="the data doctor: every problem with file:line, statistics, token counts, estimates",
        description="Read a data file once and report every problem (file, line, field), split into errors and "
        "warnings, with statistics: counts per split and label, length distributions, trained tokens, steps per "
        "epoch and, with --estimate-time, a measured training-time estimate.",
        epilog=VALIDATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("data", metavar="DATA", help="a .jsonl/.json/.csv/.parquet file, a save_to_disk directory, "
                          "or a directory of train/validation/test files")
    validate.add_argument("--model", help="count tokens with this model's tokenizer and chat template (name, directory, "
                          ".gguf or cached hub id; default: none, lengths in characters)")
    add_format_flags(validate)
    validate.add_argument("--max-length", type=config_value("max_length"), default=512, metavar="N",
                          help="tokens per example in training (default: 512)")
    validate.add_argument("--train-on-prompt", action="store_true", help="count prompt tokens as trained, as training would")
    validate.add_argument("--batch-size", type=config_value("batch_size"), default=8, metavar="N",
                          help="for steps per epoch (default: 8)")
    validate.add_argument("--gradient-accumulation-steps", type=config_value("gradient_accumulation_steps"), default=1, metavar="N",
                          help="(default: 1)")
    validate.add_argument("--epochs", type=config_value("epochs"), default=3.0, metavar="X",
                          help="for total steps and time (default: 3)")
    validate.add_argument("--validation-split", type=config_value("validation_split"), default=0.1, metavar="X",
                          help="share held out, as finetune (default: 0.1)")
    validate.add_argument("--test-split", type=config_value("test_split"), default=0.1, metavar="X",
                          help="share held out, as finetune (default: 0.1)")
    validate.add_argument("--near-dup", type=bounded(float, ge=0, le=1), default=0.85, metavar="T",
                          help="similarity above which two examples are near duplicates; 0 turns the check off (default: 0.85)")
    validate.add_argument("--near-dup-max-rows", type=bounded(int, ge=0), default=100_000, metavar="N",
                          help="search near duplicates among the first N examples; 0 for all (default: 100000)")
    validate.add_argument("--no-sensitive", action="store_true", help="skip the personal-data and secrets scan")
    validate.add_argument("--max-findings", type=bounded(int, ge=0), default=1000, metavar="N",
                          help="list at most N findings per code (all are counted); 0 lists all (default: 1000)")
    validate.add_argument("--show", type=bounded(int, ge=0), default=20, metavar="N",
                          help="findings per code shown on the terminal (default: 20)")
    validate.add_argument("--show-tokens", type=bounded(int, ge=0), default=0, metavar="N",
                          help="print N examples with the trained tokens marked (needs a tokenizer: --model, "
                          "default smollm2-135m-instruct)")
    validate.add_argument("--estimate-time", action="store_true", help="time a few training steps on this machine "
                          "(loads the model: --model, default smollm2-135m-instruct) and estimate training time")
    validate.add_argument("--method", choices=_method_names(), default="lora", help="for --estimate-time (default: lora)")
    validate.add_argument("--cost-per-hour", type=config_value("cost_per_hour"), default=None, metavar="X",
                          help="price of an hour of this machine")
    validate.add_argument("--trust-remote-code", action="store_true", help="allow the model's own tokenizer code")
    validate.add_argument("--json", action="store_true", help="print the findings and statistics as JSON")
    validate.add_argument("--report", metavar="HTML", help="also write a self-contained HTML report here")
    validate.set_defaults(handler=cmd_validate)

    prepare = subparsers.add_parser(
        "prepare", help="clean, deduplicate, balance, augment and split a dataset; writes files and a manifest",
        description="Clean (Unicode NFC, whitespace, control characters), drop invalid and empty rows, optionally "
        "drop exact and near duplicates, split into train/validation/test (no example, nor a near copy of its "
        "prompt, in two splits), optionally balance and augment the train split, and write DIR/train.jsonl, "
        "validation.jsonl, test.jsonl and manifest.json (input hash, options, seed, every row removed, changed "
        "or added and why). The same command on the same input writes the same files.",
        epilog=PREPARE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("data", metavar="DATA", help="the raw data file")
    prepare.add_argument("--out", required=True, metavar="DIR", help="output directory (replaced if it holds an earlier prepare)")
    add_format_flags(prepare)
    prepare.add_argument("--dedup", action="store_true", help="drop exact duplicates (after cleaning)")
    prepare.add_argument("--near-dup", type=bounded(float, gt=0, le=1), default=None, metavar="T",
                         help="drop near duplicates at similarity T, e.g. 0.9")
    prepare.add_argument("--balance", choices=["oversample", "undersample"], help="equalise labels in the train split")
    prepare.add_argument("--label-field", metavar="FIELD",
                         help="the label for --balance (default: --stratify, else label/answer)")
    prepare.add_argument("--augment", default="", metavar="M,M", help="augment the train split: typo, lowercase, no-punct")
    prepare.add_argument("--split", default="0.8,0.1,0.1", metavar="T,V[,E]",
                         help="train,validation[,test] shares (default: 0.8,0.1,0.1)")
    prepare.add_argument("--stratify", metavar="FIELD", help="keep FIELD's distribution equal across splits (e.g. label, output)")
    prepare.add_argument("--group-similarity", type=bounded(float, gt=0, le=1), default=0.9, metavar="T",
                         help="prompts at least this similar stay in one split (default: 0.9; 1 = only equal prompts)")
    prepare.add_argument("--seed", type=config_value("seed"), default=42, metavar="N",
                         help="seed of the split, sampling and augmentation (default: 42)")
    prepare.add_argument("--force", action="store_true", help="replace DIR even if it holds other files")
    prepare.add_argument("--json", action="store_true", help="print the manifest as JSON")
    prepare.set_defaults(handler=cmd_prepare)


def _choices(name: str) -> list[str]:
    """The values a config field of Literal type accepts (``method``: lora, full ...)."""
    from typing import get_args

    from tuneforge.config import FineTuningConfig

    return [str(choice) for choice in get_args(FineTuningConfig.model_fields[name].annotation)]


def _method_names() -> list[str]:
    """The registered training methods (``method``: full, lora, ...)."""
    from tuneforge.core.registries import METHODS

    return METHODS.names()


def cmd_validate(args: argparse.Namespace) -> int:
    from tuneforge.data.validate import ValidationOptions, validate_data

    options = ValidationOptions(
        data_format=args.data_format, text_template=args.text_template, max_length=args.max_length,
        train_on_prompt=args.train_on_prompt, batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        epochs=args.epochs, validation_split=args.validation_split, test_split=args.test_split,
        near_duplicate_threshold=args.near_dup or None, near_duplicate_max_rows=args.near_dup_max_rows or None,
        max_findings_per_code=args.max_findings or None, check_sensitive=not args.no_sensitive,
        show_tokens=args.show_tokens, cost_per_hour=args.cost_per_hour,
    )
    if not _usable_options(options):
        return 2
    tokenizer, probe = _load_for_validation(args)
    with _spinner(f"checking {args.data}", enabled=not args.json):
        report = validate_data(args.data, options, tokenizer, speed_probe=probe)
    if args.report:
        from tuneforge.data.doctor_report import write_report

        write_report(report, args.report)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        render_validation(report, args.show, args.report)
    return 0 if report.ok else 1


def _load_for_validation(args: argparse.Namespace) -> tuple[Any, Any]:
    """The tokenizer (with --model, --show-tokens or --estimate-time) and, for --estimate-time, a speed probe
    that times real training steps (the method, packing, fused loss and precision ``finetune`` would use)."""
    if not (args.model or args.show_tokens or args.estimate_time):
        return None, None
    from tuneforge.cli import render
    from tuneforge.config import DEFAULT_MODEL
    from tuneforge.model.load import load_tokenizer
    from tuneforge.model.resolve import resolve_model

    path = resolve_model(args.model or DEFAULT_MODEL, on_convert=render.note)
    tokenizer = load_tokenizer(path, args.trust_remote_code)
    if not args.estimate_time:
        return tokenizer, None
    from tuneforge.config import make_config
    from tuneforge.train.estimate import training_speed_probe

    # finetune's defaults for everything validate has no flag for (LoRA rank, packing, precision ...)
    config = make_config({"method": args.method, "batch_size": args.batch_size, "max_length": args.max_length,
                          "gradient_accumulation_steps": args.gradient_accumulation_steps, "epochs": args.epochs,
                          "train_on_prompt": args.train_on_prompt, "trust_remote_code": args.trust_remote_code})
    return tokenizer, training_speed_probe(path, config, tokenizer.pad_token_id)


def cmd_prepare(args: argparse.Namespace) -> int:
    from tuneforge.data.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(
        data_format=args.data_format, text_template=args.text_template, dedup=args.dedup, near_dup=args.near_dup,
        balance=args.balance, label_field=args.label_field, augment=[m.strip() for m in args.augment.split(",") if m.strip()],
        split=_shares(args.split), stratify=args.stratify, seed=args.seed, group_similarity=args.group_similarity,
    )
    if not _usable_options(options):
        return 2
    with _spinner(f"preparing {args.data}", enabled=not args.json):
        result = prepare_dataset(args.data, args.out, options, force=args.force)
    if args.json:
        print(json.dumps(result.manifest, indent=2, ensure_ascii=False))
    else:
        render_prepare(result)
    return 0


def _usable_options(options: Any) -> bool:
    """Invalid flag values are wrong usage (exit 2), like argparse's own errors."""
    import sys

    from tuneforge.core.errors import ConfigError

    try:
        options.check()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return True


def _shares(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        return ()  # reported by PrepareOptions.check as a usage error


def _spinner(message: str, enabled: bool) -> Any:
    from tuneforge.cli import render

    return render.Spinner(message, enabled=enabled)


# ---------------------------------------------------------------------- rendering


def render_validation(report: Any, per_code: int = 20, html_path: str | None = None) -> None:
    """The findings, grouped by code, then the statistics and token samples."""
    from rich.markup import escape

    from tuneforge.cli.render import out

    stats = report.stats
    out.print(f"[bold]{escape(report.path)}[/bold]: {stats['rows']:,} rows, {stats['usable_examples']:,} usable examples, "
              f"format {escape(str(report.data_format))}")
    for severity, items, colour in (("error", report.errors, "red"), ("warning", report.warnings, "yellow")):
        shown: dict[str, int] = {}
        for item in items:
            shown[item.code] = shown.get(item.code, 0) + 1
            if shown[item.code] <= per_code:
                field = " " + escape(f"[{item.field}]") if item.field else ""
                out.print(f"{escape(item.where)}: [{colour}]{severity}[/{colour}] [bold]{item.code}[/bold]{field} "
                          f"{escape(item.message)}", highlight=False, soft_wrap=True)
        for code, listed in shown.items():
            hidden = report.counts_by_code.get(code, listed) - min(listed, per_code)
            if hidden > 0:
                out.print(f"  [dim]... and {hidden:,} more {code} (see --json or --report)[/dim]")
    if stats["usable_examples"]:
        _render_stats(stats)
    for sample in report.samples:
        _render_sample(sample)
    for note in report.notes:
        out.print(f"[dim]note: {escape(note)}[/dim]")
    if html_path:
        out.print(f"report: [bold]{escape(html_path)}[/bold]")
    if report.ok:
        out.print(f"[bold green]no errors[/bold green] ({report.warning_count:,} warning(s))")
    else:
        out.print(f"[bold red]{report.error_count:,} error(s)[/bold red], {report.warning_count:,} warning(s); "
                  "fix the errors (or train with --skip-invalid to drop those rows)")


def _render_stats(stats: dict[str, Any]) -> None:
    from rich.table import Table

    from tuneforge.cli.render import out

    splits = stats["splits"]
    counts = Table(title="examples" + (" (estimated split)" if splits.get("estimated") else ""))
    for name in ("train", "validation", "test"):
        counts.add_column(name, justify="right")
    counts.add_row(*(f"{splits.get(name, 0):,}" for name in ("train", "validation", "test")))
    out.print(counts)
    labels = stats.get("labels")
    if labels:
        table = Table(title=f"labels (from the {labels['source']})")
        table.add_column("label")
        table.add_column("examples", justify="right")
        for label, count in list(labels["counts"].items())[:30]:
            table.add_row(label, f"{count:,}")
        out.print(table)
    lengths = stats["lengths"]
    table = Table(title=f"lengths ({lengths['unit']})")
    table.add_column("")
    for key in ("min", "mean", "p50", "p95", "max"):
        table.add_column(key, justify="right")
    for name in ("prompt", "completion", "example"):
        table.add_row(name, *(_fmt(lengths[name][key]) for key in ("min", "mean", "p50", "p95", "max")))
    out.print(table)
    training = stats["training"]
    table = Table(title="training")
    table.add_column("figure")
    table.add_column("value", justify="right")
    tokens = stats.get("tokens")
    rows = [("steps per epoch", training["steps_per_epoch"]), ("total steps", training["total_steps"])]
    if tokens:
        rows += [("tokens per epoch", training["tokens_per_epoch"]), ("trained tokens per epoch", training["trained_tokens_per_epoch"]),
                 (f"examples over max_length={tokens['max_length']}", tokens["truncated_examples"]),
                 ("tokens that would be cut", tokens["truncated_tokens"])]
    estimate = training.get("estimate")
    if estimate:
        rows += [("measured tokens/s", estimate["tokens_per_second"]), ("estimated training time", _duration(estimate["seconds"]))]
        if estimate.get("cost") is not None:
            rows.append(("estimated cost", f"{estimate['cost']:.2f}"))
    for label, value in rows:
        table.add_row(label, value if isinstance(value, str) else _fmt(value))
    out.print(table)


def _render_sample(sample: dict[str, Any]) -> None:
    """One example with its trained tokens: coloured on a terminal, [[between brackets]] otherwise."""
    from rich.markup import escape
    from rich.text import Text

    from tuneforge.cli.render import out

    ending = "yes" if sample["end_of_turn_trained"] else "NO: the model may not learn to stop"
    out.print(f"[bold]{escape(sample['where'])}[/bold]: {sample['tokens']} tokens, {sample['trained_tokens']} trained; "
              f"end-of-turn token trained: {ending}")
    if out.is_terminal:
        text = Text()
        for span in sample["spans"]:
            style = "strike dim" if span["cut"] else "bold black on green" if span["trained"] else "dim"
            text.append(span["text"], style=style)
        out.print(text)
    else:
        pieces = [("~~" + s["text"] + "~~") if s["cut"] else ("[[" + s["text"] + "]]") if s["trained"] else s["text"]
                  for s in sample["spans"]]
        out.print(escape("".join(pieces)), highlight=False)
        out.print(escape("(trained tokens are [[between double brackets]]; tokens past max_length are ~~struck~~)"), style="dim")


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def render_prepare(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tuneforge.cli.render import out

    manifest = result.manifest
    counts = manifest["counts"]
    table = Table(title="prepare")
    table.add_column("stage")
    table.add_column("examples", justify="right")
    table.add_row("rows read", f"{counts['rows_read']:,}")
    table.add_row("invalid rows removed", f"{counts['invalid']:,}")
    if "duplicates_removed" in counts:
        table.add_row("exact duplicates removed", f"{counts['duplicates_removed']:,}")
    if "near_duplicates_removed" in counts:
        table.add_row("near duplicates removed", f"{counts['near_duplicates_removed']:,}")
    balance = counts.get("balance")
    if balance:
        table.add_row(f"train {balance['method']}d", ", ".join(f"{k} {v}" for k, v in balance["labels_before"].items()))
    if counts.get("augmented"):
        table.add_row("augmented copies", f"{counts['augmented']:,}")
    for name, n in counts["written"].items():
        table.add_row(f"written: {name}", f"{n:,}")
    out.print(table)
    reasons: dict[str, int] = {}
    for item in manifest["removed"]:
        reasons[item["code"]] = reasons.get(item["code"], 0) + 1
    if reasons:
        out.print("removed: " + ", ".join(f"{code} {n:,}" for code, n in sorted(reasons.items())))
    if manifest["changed"]:
        out.print(f"cleaned: {len(manifest['changed']):,} row(s) changed (Unicode, whitespace or control characters)")
    for name, path in result.files.items():
        out.print(f"  {escape(str(path))}")
    out.print("[dim]every removed, changed and added row is listed with its reason in manifest.json[/dim]")
