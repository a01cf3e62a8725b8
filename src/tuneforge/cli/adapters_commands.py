"""``tuneforge adapters list|merge``: several adapters on one base (library: ``tuneforge.adapter_sets``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

ADAPTERS_EXAMPLES = """\
examples:
  tuneforge finetune --data billing.jsonl --adapter-name billing     -> runs/billing/adapter/
  tuneforge finetune --data shipping.jsonl --adapter-name shipping   -> runs/shipping/adapter/
  tuneforge adapters list                                            the adapters under runs/
  tuneforge adapters merge billing shipping --weights 0.7,0.3 --how ties --out runs/support
  tuneforge chat --adapter runs/support --prompt "Where is my parcel?"
"""


def _weights(text: str) -> list[float]:
    try:
        weights = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"write the weights as numbers separated by commas, e.g. 0.7,0.3 (got {text!r})") from None
    if not weights:
        raise argparse.ArgumentTypeError("give one weight per adapter, e.g. 0.7,0.3")
    return weights


def add_adapters_commands(subparsers: Any) -> None:
    """Register ``adapters list`` and ``adapters merge`` on the ``tuneforge`` sub-command parser."""
    from tuneforge.cli.flags import bounded
    from tuneforge.model.adapters import MERGE_METHODS

    adapters = subparsers.add_parser(
        "adapters", help="several adapters on one base: list them, merge some into one",
        description="Adapters trained on the same base (finetune --adapter-name NAME keeps each in runs/NAME/): "
        "list them, or combine several into one with PEFT's weighted adapters.",
        epilog=ADAPTERS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = adapters.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the adapters under runs/ (or the given directories): name, base, method, size")
    listing.add_argument("roots", nargs="*", metavar="DIR", default=None,
                         help="run directories, adapter directories or folders of runs (default: runs/)")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    listing.set_defaults(handler=cmd_adapters_list)

    merge = actions.add_parser(
        "merge", help="combine LoRA adapters of one base into one, scored on each source's test set",
        description="Combine LoRA adapters (methods lora, qlora, dora) trained on one base into a new adapter "
        "(PEFT add_weighted_adapter) written to --out as a run-like directory (adapter/, config.yaml, "
        "merge.json), then score it on the test set of every source run, beside that run's own score.",
        epilog=ADAPTERS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    merge.add_argument("adapters", nargs="+", metavar="ADAPTER", help="adapter names (from `adapters list`) or run directories")
    merge.add_argument("--weights", type=_weights, required=True, metavar="W,W,...", help="one weight per adapter, e.g. 0.7,0.3")
    merge.add_argument("--how", choices=MERGE_METHODS, default="linear",
                       help="linear: weighted sum of the low-rank factors (same ranks); cat: factors side by side; "
                       "ties, dare_linear, dare_ties: prune the updates to --density first (default: linear)")
    merge.add_argument("--density", type=bounded(float, gt=0.0, le=1.0), default=0.5, metavar="X",
                       help="share of each update kept by ties/dare (default: 0.5)")
    merge.add_argument("--out", required=True, metavar="DIR", help="where the combined adapter goes (a run-like directory)")
    merge.add_argument("--name", default=None, help="the combined adapter's name (default: the --out folder's name)")
    merge.add_argument("--runs", nargs="*", metavar="DIR", default=None, help="where to look adapter names up (default: runs/)")
    merge.add_argument("--no-eval", action="store_true", help="do not score the combined adapter")
    merge.add_argument("--max-eval-examples", type=bounded(int, ge=1), default=None, metavar="N",
                       help="score on at most N test examples of each source (default: all)")
    merge.add_argument("--json", action="store_true", help="print merge.json")
    merge.set_defaults(handler=cmd_adapters_merge)


def cmd_adapters_list(args: argparse.Namespace) -> int:
    from tuneforge.adapter_sets import DEFAULT_ROOTS, list_adapters
    from tuneforge.cli import render

    found = list_adapters(args.roots or DEFAULT_ROOTS)
    if args.json:
        print(json.dumps([info.to_dict() for info in found], indent=2))
        return 0
    if not found:
        render.note(f"no adapters in {', '.join(map(str, args.roots or DEFAULT_ROOTS))}; train one with "
                    "tuneforge finetune --adapter-name NAME")
        return 0
    from rich.table import Table

    table = Table("name", "base", "method", "size", "path")
    for info in found:
        table.add_row(info.name, str(info.base), info.method, f"{info.size_bytes / 1024:.0f} KiB", info.path)
    render.console.print(table)
    return 0


def cmd_adapters_merge(args: argparse.Namespace) -> int:
    from tuneforge.adapter_sets import DEFAULT_ROOTS, merge_adapters
    from tuneforge.cli import render

    result = merge_adapters(args.adapters, args.weights, args.how, args.out, density=args.density, name=args.name,
                            roots=args.runs or DEFAULT_ROOTS, evaluate=not args.no_eval,
                            max_eval_examples=args.max_eval_examples,
                            on_progress=None if args.json else render.note)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    render.note(f"combined {', '.join(s['name'] for s in result.sources)} ({args.how}, weights "
                f"{', '.join(map(str, result.weights))}) into {result.out_dir}/adapter")
    from rich.table import Table

    table = Table("test set of", "examples", "metric", "combined", "source alone", "base")
    for source, scores in result.evaluations.items():
        if "skipped" in scores:
            table.add_row(source, "-", scores["skipped"], "", "", "")
            continue
        for metric in ("accuracy", "loss"):
            if metric in scores["combined"]:
                own, base = scores.get("source_tuned") or {}, scores.get("source_base") or {}
                table.add_row(source, str(scores["examples"]), metric, _fmt(scores["combined"][metric]),
                              _fmt(own.get(metric)), _fmt(base.get(metric)))
    render.console.print(table)
    return 0


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
