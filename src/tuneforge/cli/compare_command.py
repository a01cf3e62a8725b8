"""``tuneforge compare RUN_OR_MODEL…``: parse, call ``tuneforge.evaluate.compare.compare_sources``, render."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COMPARE_EXAMPLES = """\
examples:
  tuneforge compare runs/a runs/b                          on runs/a's test split
  tuneforge compare smollm2-135m-instruct runs/a --data test.jsonl
  tuneforge compare runs/main runs/candidate --baseline runs/main --fail-if-worse 0.02   (CI: exit 1 on a regression)
  tuneforge compare ft:smollm2-135m-instruct::ftjob-abc runs/a/checkpoints/step-40 smollm2-135m-instruct --data test.jsonl

a RUN_OR_MODEL is a run directory, a checkpoint (RUN/checkpoints/step-N), a base model name or
directory, or a model id of the job store (ft:… of a fine-tuning job, …:ckpt-step-N of its checkpoints).

beside them (unless --no-baselines): the first trained model's base prompted with --shots training
examples (few-shot, and retrieval few-shot by BM25), and per trained model the verdict: does it beat
the best prompting baseline, at what prompt-token cost.
per pair: McNemar's exact test on which examples each model answers right (label match for label
tasks, exact match otherwise) and a paired bootstrap 95 % confidence interval of the difference.
Writes comparison.json, per_example.jsonl and compare.html (training curves overlaid, the examples
where the models disagree) to --out (default: ./compare-<first>).
exit status: 0 no regression; 1 a model is worse than --baseline by more than --fail-if-worse
  (or the input failed); 2 wrong usage.
"""


def add_compare_command(subparsers: Any) -> None:
    """Register ``compare`` on the ``tuneforge`` sub-command parser."""
    from tuneforge.cli.flags import bounded, config_value, metric_names
    from tuneforge.cli.jobs_commands import _store_flags

    compare = subparsers.add_parser(
        "compare", help="compare runs, checkpoints and base models on the same data, with significance tests",
        description="Evaluate every RUN_OR_MODEL (a run directory, a checkpoint, a base model name) on the same "
        "examples: one table of every metric, a paired significance test per pair, per-example differences.",
        epilog=COMPARE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("sources", nargs="+", metavar="RUN_OR_MODEL", help="run directories, checkpoints, model names or ft: model ids of the job store")
    compare.add_argument("--data", default=None, metavar="FILE", help="the examples (default: the first run's test split)")
    compare.add_argument("--metric", default="accuracy", metavar="NAME",
                         help="the metric of the pairwise differences and --fail-if-worse: a metric name, a score "
                         "(f1_score) or a module:function plug-in, scored too (default: accuracy; exact_match when the "
                         "data is free text)")
    compare.add_argument("--evaluation-metrics", type=metric_names, default=None, metavar="A,B",
                         help="the metrics in the table (registered names or module:function plug-ins; default: "
                         "accuracy,precision,recall,f1,loss,perplexity,bleu,rouge)")
    compare.add_argument("--baseline", default=None, metavar="RUN", help="the model the others must not be worse than")
    compare.add_argument("--fail-if-worse", type=bounded(float, ge=0), default=None, metavar="X",
                         help="with --baseline: exit 1 when a model is worse by more than X on --metric")
    compare.add_argument("--out", default=None, metavar="DIR", help="where to write the comparison (default: ./compare-<first>)")
    compare.add_argument("--max-examples", type=config_value("max_eval_examples"), default=None, metavar="N",
                         help="use only the first N examples (default: all)")
    compare.add_argument("--max-new-tokens", type=config_value("max_new_tokens"), default=64, metavar="N",
                         help="answer length limit (default: 64)")
    compare.add_argument("--no-baselines", dest="baselines", action="store_false",
                         help="leave out the prompting baselines (the first trained model's base with --shots examples "
                         "in the prompt: few-shot and retrieval few-shot) and the verdicts")
    compare.add_argument("--shots", type=config_value("baseline_shots"), default=5, metavar="K",
                         help="training examples in a baseline's prompt (default: 5)")
    compare.add_argument("--retriever", choices=["bm25"], default="bm25", help="how retrieval few-shot finds its examples")
    compare.add_argument("--train", metavar="FILE", default=None,
                         help="the examples baselines draw shots from (default: the first run's data/train.jsonl)")
    compare.add_argument("--json", action="store_true", help="print comparison.json instead of tables")
    _store_flags(compare)
    compare.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from tuneforge.cli import render
    from tuneforge.core.errors import ConfigError
    from tuneforge.cli.jobs_commands import _manager
    from tuneforge.evaluate.compare import compare_sources, write_comparison
    from tuneforge.jobs.manager import is_store_model_id

    if args.fail_if_worse is not None and args.baseline is None:
        raise ConfigError(["--fail-if-worse needs --baseline RUN (the model the others are checked against)"])
    from tuneforge.data.manager import TrainingDataManager

    train = TrainingDataManager().load(args.train)[0] if args.train else None
    options = dict(metric=args.metric, baseline=args.baseline, fail_if_worse=args.fail_if_worse, max_examples=args.max_examples,
                   max_new_tokens=args.max_new_tokens, baselines=args.baselines, shots=args.shots, retriever=args.retriever,
                   train=train, **({"metrics": args.evaluation_metrics} if args.evaluation_metrics else {}))
    with render.Spinner(f"comparing {len(args.sources)} models", enabled=not args.json):
        if any(is_store_model_id(source) for source in args.sources):
            # ft: model ids live in the job store: the manager's compare_models, the same code with its resolver.
            comparison = _manager(args).compare_models(args.sources, args.data, **options)["comparison"]
        else:
            comparison = compare_sources(args.sources, data=args.data, **options)
    out = Path(args.out) if args.out else Path(f"compare-{comparison.contenders[0].name.replace('/', '-')}")
    paths = write_comparison(comparison, out)
    if args.json:
        print(json.dumps(comparison.to_dict(), indent=2))
    else:
        render.comparison(comparison.to_dict(), paths)
    return 1 if comparison.regressions else 0
