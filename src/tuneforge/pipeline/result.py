"""``TrainingResult``: what a run returns and ``results.json`` holds; the event callbacks the stages report through."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneforge.config import FineTuningConfig
from tuneforge.core.status import RunStatus
from tuneforge.evaluate.run import ModelEvaluation
from tuneforge.train.outcome import TrainOutcome

EventCallback = Callable[[dict[str, Any]], None]  # the caller's on_event: every event, as written to events.jsonl
Notify = Callable[..., dict[str, Any]]  # notify(type, **fields): write an event, show it, keep issues (run.py)


@dataclass
class TrainingResult:
    """The outcome of a run; ``to_dict()`` is exactly what ``results.json`` holds."""

    run_dir: Path
    status: RunStatus  # see core/status.py; compares equal to its word ("succeeded", ...)
    base: ModelEvaluation | None = None
    tuned: ModelEvaluation | None = None
    train: dict[str, Any] = field(default_factory=dict)
    issues: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Baseline.to_dict() (evaluate/baselines.py)
    verdict: dict[str, Any] | None = None  # was fine-tuning worth it: evaluate.baselines.verdict
    cross_validation: dict[str, Any] | None = None  # K folds: per-fold and mean ± std scores (--cross-validation K)
    forgetting: dict[str, Any] | None = None  # general-text perplexity before/after: evaluate/forgetting.py
    error_analysis: dict[str, Any] | None = None  # the tuned model's mistakes, fixed and broken: evaluate/error_analysis.py
    result_checks: list[dict[str, Any]] = field(default_factory=list)  # problems with the tuned answers: train/result_checks.py
    lineage: dict[str, Any] | None = None  # the run it continues (--init-from): lineage.Parent.lineage()
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> value, reason, auto: train/auto.py

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "base": self.base.performance if self.base else None,
            "tuned": self.tuned.performance if self.tuned else None,
            "train": self.train,
            "hyperparameters": self.hyperparameters,
            "issues": self.issues,
            "task": (self.tuned or self.base).task if (self.tuned or self.base) else None,
            "data": self.data,
            "model": self.model,
            "evaluation": {
                "base": self.base.resources if self.base else None,
                "tuned": self.tuned.resources if self.tuned else None,
            },
            "baselines": self.baselines,
            "verdict": self.verdict,
            "error_analysis": self.error_analysis,
            "result_checks": self.result_checks,
            "forgetting": self.forgetting,
            "cross_validation": self.cross_validation,
            "lineage": self.lineage,
            "error": self.error,
            "run_dir": str(self.run_dir),
        }


def train_summary(outcome: TrainOutcome, config: FineTuningConfig) -> dict[str, Any]:
    """``results.json``'s ``train``: the loop's outcome, rounded, with its compute cost and the learning rate used."""
    summary = asdict(outcome)
    summary["train_seconds"] = round(outcome.train_seconds, 2)
    summary["overhead_seconds"] = round(outcome.overhead_seconds, 2)
    summary["tokens_per_second"] = round(outcome.tokens_per_second, 1)
    summary["compute_cost"] = round(outcome.train_seconds / 3600 * config.cost_per_hour, 4)
    summary["learning_rate"] = config.resolved_learning_rate
    return summary
