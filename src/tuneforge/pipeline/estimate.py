"""The run's time and cost estimate: a few real steps timed before training (train/estimate.py), announced as an event."""

from __future__ import annotations

from typing import Any

from tuneforge.config import FineTuningConfig
from tuneforge.pipeline.inputs import EncodedInputs
from tuneforge.pipeline.result import Notify
from tuneforge.train import distributed


def announce_estimate(model: Any, inputs: EncodedInputs, config: FineTuningConfig, notify: Notify) -> dict[str, Any] | None:
    """Time a few real steps first (the model is left unchanged) and announce the run's expected time and cost.

    Skipped when resuming (the first attempt announced it) and with ``estimate_steps: 0``.
    """
    from tuneforge.train.estimate import estimate_training

    if config.resume or not config.estimate_steps or distributed.current_world().active:
        return None  # (with several processes one process's timing of the whole step would mislead)
    estimate = estimate_training(model, inputs.train_set, inputs.validation_set, config,
                                 inputs.tokenizer.pad_token_id, steps=config.estimate_steps).to_dict()
    if estimate["seconds"] is None:
        return None
    notify("train.estimate", **estimate, message=estimate_message(estimate, config))
    return estimate


def estimate_message(estimate: dict[str, Any], config: FineTuningConfig) -> str:
    """One line for people: the expected training time, steps, tokens at the measured speed, and the cost."""
    seconds = estimate["seconds"]
    text = (f"estimated training time {_duration(seconds)} ({estimate['optimizer_steps']} steps, "
            f"{estimate['tokens']:,} tokens at a measured {estimate['tokens_per_second']:,.0f} tokens/s"
            + (f", {estimate['evaluations']} evaluations {_duration(estimate['eval_seconds'])}" if estimate["evaluations"] else "")
            + ")")
    if estimate.get("cost") is not None:
        text += f"; cost {estimate['cost']:.4f} at {config.cost_per_hour}/hour"
    return text


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
