"""Validation while training: the validation loss at each due evaluation, the best checkpoint and early stopping.

``evaluate`` scores the validation split with the run's objective, records the result in the
run's ``TrainState`` (its history, the best step by ``best_metric``, evaluations without
improvement), emits ``eval.result`` and, when ``early_stopping``'s patience is spent,
``train.early_stopped``. When evaluations are due is train/cadence.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.data.batching import iter_eval_batches
from tuneforge.model.loss import mean_label_loss
from tuneforge.train.issues import Issue

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig
    from tuneforge.train.loop import TrainingRun

# best_metric values where higher is better; the others are losses.
HIGHER_IS_BETTER = {"validation_accuracy"}


def improvement_needed(config: FineTuningConfig, best: float) -> float:
    """How much an evaluation must beat ``best`` by to count as an improvement for early stopping:
    the larger of ``early_stopping_min_delta`` and ``early_stopping_relative_delta`` of the best value.

    A relative delta keeps meaning as a loss gets small: 0.01 is a fifth of a loss of 0.05 but noise on one of 2.
    """
    return max(config.early_stopping_min_delta, config.early_stopping_relative_delta * abs(best))


def goal_reached(config: FineTuningConfig, value: float, sign: float) -> bool:
    """Whether ``value`` of ``best_metric`` is at or beyond ``early_stopping_goal`` (``sign``: -1 when higher is better)."""
    return config.early_stopping_goal is not None and sign * value <= sign * config.early_stopping_goal


def evaluate(run: TrainingRun, n_batches: int) -> tuple[list[Issue], str | None]:
    """Validation loss; track the best checkpoint; early stopping. Returns (issues, reason to stop or None).

    ``n_batches``: the batches of the current epoch (for the evaluation's fractional ``epoch``).
    """
    state, config = run.state, run.config
    metrics = mean_label_loss(run.model, iter_eval_batches(run.validation_set.items, config.batch_size, run.pad_token_id),
                              run.loss_sums)
    record = {"step": state.step, "epoch": state.epoch_progress(n_batches),
              "validation_loss": metrics["loss"], "validation_accuracy": metrics["accuracy"],
              "validation_perplexity": metrics["perplexity"],
              **{f"validation_{name}": value for name, value in metrics.items() if name not in ("loss", "accuracy", "perplexity")}}
    state.validation_history.append(record)
    value = record[config.best_metric]
    sign = -1.0 if config.best_metric in HIGHER_IS_BETTER else 1.0
    previous = state.best_value
    if previous is None or sign * value < sign * previous:
        state.best_value, state.best_step = value, state.step
    if previous is None or sign * (previous - value) > improvement_needed(config, previous):
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    run.emit("eval.result", **record, best_step=state.best_step, best_value=state.best_value,
             evals_without_improvement=state.evals_without_improvement)
    issues = run.monitor.track_metrics(record)
    if not config.early_stopping:
        return issues, None
    if goal_reached(config, value, sign):
        why = {"goal": config.early_stopping_goal,
               "message": f"{config.best_metric} reached {value:.4g}, the goal of {config.early_stopping_goal:g}: "
                          "nothing is left to gain"}
    elif state.evals_without_improvement >= config.early_stopping_patience:
        why = {"patience": config.early_stopping_patience,
               "message": f"{config.best_metric} has not improved by more than {improvement_needed(config, state.best_value):.3g} "
                          f"for {state.evals_without_improvement} evaluations; the best was {state.best_value:.4g} at step "
                          f"{state.best_step}"}
    else:
        return issues, None
    run.emit("train.early_stopped", step=state.step, metric=config.best_metric, best_value=state.best_value,
             best_step=state.best_step, **why)
    return issues, "early_stopping"
