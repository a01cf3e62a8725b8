"""``TrainOutcome``: what a call of ``fit`` did, measured, as the pipeline writes it to ``results.json``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tuneforge.config import FineTuningConfig
from tuneforge.core.memory import peak_memory_mb
from tuneforge.train.state import TrainState


@dataclass
class TrainOutcome:
    """What training did, measured."""

    steps: int = 0
    epochs: float = 0.0
    train_seconds: float = 0.0  # wall time of the loop, evaluations and checkpoints included
    overhead_seconds: float = 0.0  # of which: evaluations and checkpoint writes
    trained_tokens: int = 0  # labelled tokens the loss was taken on, over all epochs
    processed_tokens: int = 0  # real (non-padding) tokens through the model
    tokens_per_second: float = 0.0  # processed_tokens / (train_seconds - overhead_seconds)
    final_train_loss: float | None = None
    best_validation_loss: float | None = None
    validation_history: list[dict[str, float]] = field(default_factory=list)
    peak_memory_mb: float = 0.0
    best_metric: str | None = None  # the metric that picked the best checkpoint
    best_metric_value: float | None = None
    best_step: int | None = None
    final_weights_step: int = 0  # the step whose weights the model holds at the end (best or last)
    stopped_early: dict[str, Any] | None = None  # {"step", "reason"} when training ended before its plan
    interrupted: str | None = None  # why training stopped at a step boundary: the signal's name or the request's reason
    checkpoint: str | None = None  # the newest checkpoint, relative to the run directory
    resumed_from_step: int | None = None
    rollbacks: int = 0
    skipped_steps: int = 0


def complete_outcome(outcome: TrainOutcome, state: TrainState, config: FineTuningConfig, steps_per_epoch: int,
                     clock_start: float) -> TrainOutcome:
    """Fill ``outcome``'s measured fields from the run's final ``state`` (the loop set the rest as it went)."""
    outcome.steps = state.step
    outcome.epochs = round(min(config.epochs, state.step / steps_per_epoch), 4)
    outcome.train_seconds = time.perf_counter() - clock_start
    outcome.overhead_seconds = state.overhead_seconds
    outcome.trained_tokens, outcome.processed_tokens = state.trained_tokens, state.processed_tokens
    outcome.tokens_per_second = state.processed_tokens / max(outcome.train_seconds - state.overhead_seconds, 1e-9)
    outcome.final_train_loss = state.final_train_loss
    outcome.validation_history = state.validation_history
    losses = [record["validation_loss"] for record in state.validation_history]
    outcome.best_validation_loss = min(losses) if losses else None
    if state.best_step is not None:
        outcome.best_metric, outcome.best_metric_value, outcome.best_step = config.best_metric, state.best_value, state.best_step
    if not outcome.final_weights_step:
        outcome.final_weights_step = state.step
    outcome.rollbacks, outcome.skipped_steps = state.rollbacks, state.skipped_steps
    outcome.peak_memory_mb = peak_memory_mb()
    return outcome
