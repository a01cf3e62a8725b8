"""The run's prompting baselines (evaluate/baselines.py) and the verdict: was fine-tuning worth it against them?

The baselines run on the base model before training (full fine-tuning changes it in place), their
shots drawn from the train split only; a resumed run reuses its first attempt's
(events.jsonl ``baselines.finished`` with the same key). Their answers go to baseline_predictions.jsonl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config import FineTuningConfig
from tuneforge.data.examples import TrainingData
from tuneforge.pipeline.evaluation import evaluation_key, write_jsonl
from tuneforge.pipeline.result import EventCallback, Notify, TrainingResult

BASELINE_PREDICTIONS = "baseline_predictions.jsonl"  # the prompting baselines' answers (evaluate/baselines.py)


def run_baselines(model: Any, tokenizer: Any, data: TrainingData, test: list[Any], evaluation_args: dict[str, Any],
                  config: FineTuningConfig, run_dir: Path, prior_events: list[dict[str, Any]], notify: Notify,
                  on_event: EventCallback) -> dict[str, dict[str, Any]]:
    """The prompting baselines of the base model on ``test`` (name -> ``Baseline.to_dict()``), shots from the train split only."""
    from tuneforge.evaluate.baselines import evaluate_baselines

    key = evaluation_key(config.model, test, {**evaluation_args, "shots": config.baseline_shots, "seed": config.seed,
                                              "retriever": config.baseline_retriever,
                                              "train": [example.to_dict() for example in data.examples]})
    recorded = [e for e in prior_events if e.get("type") == "baselines.finished" and e.get("key") == key]
    if recorded and isinstance(recorded[-1].get("baselines"), dict):
        return recorded[-1]["baselines"]
    notify("baselines.started", examples=len(test), shots=config.baseline_shots, retriever=config.baseline_retriever)
    found = evaluate_baselines(model, tokenizer, data.examples, test, shots=config.baseline_shots,
                               retriever=config.baseline_retriever, seed=config.seed,
                               on_progress=lambda name, n: on_event({"type": "eval.progress", "model": name, "done": n}),
                               **evaluation_args)
    baselines = {name: baseline.to_dict() for name, baseline in found.items()}
    write_jsonl(run_dir / BASELINE_PREDICTIONS, [{"baseline": name, **row} for name, baseline in found.items()
                                                 for row in baseline.evaluation.predictions])
    notify("baselines.finished", key=key, baselines=baselines)
    return baselines


def record_verdict(result: TrainingResult, notify: Notify) -> None:
    """``result.verdict``: the tuned model against the base and the baselines (``eval.verdict`` when there is one)."""
    from tuneforge.evaluate.baselines import candidates_of, verdict

    result.verdict = verdict({"performance": result.tuned.performance, "resources": result.tuned.resources},
                             candidates_of(result.base, result.baselines))
    if result.verdict:
        notify("eval.verdict", **result.verdict)
