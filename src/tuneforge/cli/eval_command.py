"""``tuneforge eval``: score a model (a base, a trained run, an adapter) on a data file, beside its base and the
prompting baselines, and say whether fine-tuning was worth it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tuneforge.cli.flags import add_format_flags, config_value, metric_names, model_flags
from tuneforge.cli.help_text import data_help


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    """``tuneforge eval --data FILE``: ``--adapter``/``--model``, the evaluation's settings, the baselines'."""
    evaluate = commands.add_parser(
        "eval", help="evaluate a model (optionally a trained run or adapter) on a dataset",
        description="Score a model on every example of a data file: loss, perplexity, and generated answers "
        "(accuracy/precision/recall/F1 for label tasks, exact match/BLEU/ROUGE-L for free text). Beside it, on the "
        "same examples: with --adapter its base model, and (with training examples to show: the run's train split or "
        "--train) the prompting baselines, few-shot and BM25 retrieval few-shot, each with its prompt tokens and "
        "seconds per request, and the verdict: does the tuned model beat the best of them?",
        epilog=data_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--data", required=True, help="the examples to score")
    model_flags(evaluate)
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
