"""The run's evaluation stages: the base model before training, the tuned model after, and what is drawn from them.

The tuned model's stage also checks its answers (train/result_checks.py), analyses its mistakes
against the base's (evaluate/error_analysis.py) and, with ``judge``, has a model score both
(evaluate/judge.py). A resumed run reuses its first attempt's base evaluation when the key (model,
test examples, settings) is the same: scores from events.jsonl, answers from base_predictions.jsonl.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tuneforge.config import FineTuningConfig
from tuneforge.core.paths import atomic_write_text
from tuneforge.data.examples import TrainingData
from tuneforge.evaluate.run import ModelEvaluation, evaluate_model
from tuneforge.model.load import load_tokenizer, pick_device
from tuneforge.model.resolve import resolve_model
from tuneforge.pipeline.result import EventCallback, Notify, TrainingResult

BASE_PREDICTIONS = "base_predictions.jsonl"  # the base model's answers, so a resumed run need not evaluate it again


def evaluation_setup(config: FineTuningConfig, data: TrainingData, labels: list[str] | None) -> tuple[list[Any], dict[str, Any]]:
    """The test examples to evaluate on (at most ``max_eval_examples``) and the settings every evaluation of the run shares."""
    evaluation_args = dict(max_length=config.max_length, batch_size=config.batch_size, labels=labels,
                           max_new_tokens=config.max_new_tokens, metrics=config.evaluation_metrics)
    test = data.test[: config.max_eval_examples] if config.max_eval_examples else data.test
    if config.json_schema:  # the run's schema for every test example without its own (evaluate/answer_checks.py)
        from tuneforge.evaluate.answer_checks import load_json_schema, with_json_schema

        test = with_json_schema(test, load_json_schema(config.json_schema))
        evaluation_args["metrics"] = list(dict.fromkeys([*config.evaluation_metrics, "json_schema"]))
    return test, evaluation_args


def evaluate_base(model: Any, tokenizer: Any, test: list[Any], evaluation_args: dict[str, Any], config: FineTuningConfig,
                  run_dir: Path, prior_events: list[dict[str, Any]], notify: Notify, on_event: EventCallback) -> ModelEvaluation:
    """The base model on ``test``, or (resuming) the first attempt's evaluation of this very base on this very test set."""
    key = evaluation_key(config.model, test, evaluation_args)
    base = recorded_base(run_dir, prior_events, key) if config.resume else None
    if base is not None:
        notify("eval.reused", model="base", examples=len(test), performance=base.performance,
               resources=base.resources, message="the base model's evaluation from the first attempt")
        return base
    notify("eval.started", model="base", examples=len(test))
    base = evaluate_model(model, tokenizer, test, **evaluation_args, cost_per_hour=config.cost_per_hour,
                          on_progress=lambda n: on_event({"type": "eval.progress", "model": "base", "done": n}))
    write_jsonl(run_dir / BASE_PREDICTIONS, base.predictions)
    notify("eval.finished", model="base", performance=base.performance, resources=base.resources,
           task=base.task, key=key, predictions=len(base.predictions))
    return base


def evaluate_tuned(model: Any, tokenizer: Any, test: list[Any], evaluation_args: dict[str, Any], config: FineTuningConfig,
                   training_time: float, labels: list[str] | None, model_dir: Path, run_dir: Path, result: TrainingResult,
                   notify: Notify, on_event: EventCallback) -> None:
    """The tuned model on ``test`` into ``result.tuned``, with predictions.jsonl, the result checks, the error analysis
    and (``judge``) the judge's scores."""
    notify("eval.started", model="tuned", examples=len(test))
    result.tuned = evaluate_model(model, tokenizer, test, **evaluation_args, cost_per_hour=config.cost_per_hour,
                                  training_time=training_time,
                                  on_progress=lambda n: on_event({"type": "eval.progress", "model": "tuned", "done": n}))
    notify("eval.finished", model="tuned", performance=result.tuned.performance, resources=result.tuned.resources)
    write_predictions(run_dir, result.base, result.tuned)
    if result.tuned.predictions:
        from tuneforge.evaluate.error_analysis import error_analysis
        from tuneforge.train.result_checks import check_predictions

        # Empty, echoed, collapsed or endless answers: what the scores alone do not say.
        result.result_checks = [finding.to_dict() for finding in check_predictions(result.tuned.predictions)]
        for finding in result.result_checks:
            notify("results.checked", **finding)

        result.error_analysis = error_analysis(result.tuned.predictions, result.base.predictions if result.base else None,
                                               result.tuned.task, labels)
    if config.judge:
        judge(config, model_dir, result, notify)


def judge(config: FineTuningConfig, model_dir: Path, result: TrainingResult, notify: Notify) -> None:
    """LLM-as-judge scores (evaluate/judge.py) of the base and tuned answers, added to their performance."""
    from tuneforge.evaluate.judge import DEFAULT_RUBRIC, judge_answers
    from tuneforge.model.load import load_model

    judge_dir = model_dir if config.judge == "base" else resolve_model(config.judge)
    judge_model = load_model(judge_dir, pick_device(), config.trust_remote_code)
    judge_tokenizer = load_tokenizer(judge_dir, config.trust_remote_code)
    for name, evaluation in (("base", result.base), ("tuned", result.tuned)):
        if evaluation is None or not evaluation.predictions:
            continue
        scores = judge_answers(judge_model, judge_tokenizer, evaluation.predictions, config.judge_rubric or DEFAULT_RUBRIC)
        evaluation.performance.update({k: float(scores[k]) for k in ("judge_score", "judge_agreement", "judge_kappa")})
        notify("eval.judged", model=name, judge=config.judge, **{k: v for k, v in scores.items() if k.startswith("judge_")})
    del judge_model


def general_perplexity(model: Any, tokenizer: Any, config: FineTuningConfig) -> float:
    """The model's perplexity on general text (evaluate/forgetting.py), before and after training with ``forgetting_check``."""
    from tuneforge.evaluate.forgetting import general_perplexity as perplexity

    return perplexity(model, tokenizer, config.max_length, config.batch_size)


def evaluation_key(model: str, test: list[Any], evaluation_args: dict[str, Any]) -> str:
    """A fingerprint of everything that decides an evaluation's result: model, test examples, settings."""
    content = {"model": model, "examples": [(example.to_dict(), example.source) for example in test],
               **{name: list(value) if isinstance(value, (list, tuple)) else value for name, value in evaluation_args.items()}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def recorded_base(run_dir: Path, events: list[dict[str, Any]], key: str) -> ModelEvaluation | None:
    """The base evaluation an earlier attempt recorded with this ``key`` (scores in events, predictions in a file).

    None when there is none, or its predictions file is missing or damaged: then the base is evaluated again.
    """
    recorded = [e for e in events if e.get("type") == "eval.finished" and e.get("model") == "base" and e.get("key") == key]
    if not recorded or not isinstance(recorded[-1].get("performance"), dict):
        return None
    event = recorded[-1]
    try:
        lines = (run_dir / BASE_PREDICTIONS).read_text(encoding="utf-8").splitlines()
        predictions = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    if len(predictions) != event.get("predictions") or not all(isinstance(p, dict) for p in predictions):
        return None
    return ModelEvaluation(performance=event["performance"], resources=dict(event.get("resources") or {}),
                           task=str(event.get("task") or "generation"), predictions=predictions)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_predictions(run_dir: Path, base: ModelEvaluation | None, tuned: ModelEvaluation) -> None:
    """predictions.jsonl: one line per test example, the reference and both models' answers, for error analysis."""
    base_answers = [p["prediction"] for p in base.predictions] if base else [None] * len(tuned.predictions)
    lines = []
    for base_answer, row in zip(base_answers, tuned.predictions):
        lines.append(json.dumps({"source": row["source"], "input": row["input"], "reference": row["reference"],
                                 "base": base_answer, "tuned": row["prediction"]}))
    atomic_write_text(run_dir / "predictions.jsonl", "\n".join(lines) + ("\n" if lines else ""))
