"""``TrainingMetrics``: the typed form of one step's (or one evaluation's) metrics.

The training loop writes its metrics as plain fields of ``train.step`` and ``eval.result`` events in
``events.jsonl``; this dataclass is the same record with names and types, for code that reads or
produces metrics (``TrainingMonitor.track_metrics`` takes either). ``from_event`` and ``to_dict``
convert without loss: ``to_dict`` gives the event's field names back (``epoch`` for
``epoch_progress``), leaves out what is unset, and keeps fields it has no name for in ``extra``,
so the events format does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

ENVELOPE = {"seq", "time", "type"}  # the event's own fields, not metrics
_RENAMED = {"epoch": "epoch_progress"}  # event field -> attribute


@dataclass
class ExampleCounts:
    """Training examples consumed so far, and planned over the whole run (all epochs)."""

    processed: int = 0
    total: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"processed": self.processed, "total": self.total}


@dataclass
class TrainingMetrics:
    """One optimizer step's metrics, or one evaluation's (then the ``validation_*`` fields are set).

    Attributes:
        step: optimizer steps done (1 for the first).
        loss: mean loss over the step's labelled tokens, in nats.
        accuracy: share of the step's labelled tokens predicted right (greedy next token).
        perplexity: ``exp(loss)``.
        learning_rate: the rate this step's update used.
        epoch_progress: epochs done, fractional: 1.25 is a quarter into the second epoch (``epoch`` in events).
        examples: training examples processed so far and in total.
        validation_loss, validation_accuracy, validation_perplexity: an evaluation on the validation set.
        trained_tokens: labelled tokens the step's loss is a mean over (its noise shrinks with their count).
        extra: any other field of the event (kept so that ``to_dict`` gives the event back).
    """

    step: int = 0
    loss: float | None = None
    accuracy: float | None = None
    perplexity: float | None = None
    learning_rate: float | None = None
    epoch_progress: float | None = None
    examples: ExampleCounts | None = None
    validation_loss: float | None = None
    validation_accuracy: float | None = None
    validation_perplexity: float | None = None
    grad_norm: float | None = None
    trained_tokens: int | None = None
    total_steps: int | None = None
    tokens_per_second: float | None = None
    step_tokens_per_second: float | None = None
    memory_mb: float | None = None
    gpu_memory_mb: float | None = None
    elapsed_seconds: float | None = None
    skipped: bool = False  # a non-finite step whose update was not applied
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_evaluation(self) -> bool:
        return self.validation_loss is not None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> TrainingMetrics:
        """The metrics of a ``train.step`` or ``eval.result`` event (or any mapping of the same fields).

        Non-finite numbers, which ``events.jsonl`` stores as the strings "nan"/"inf", become floats again.
        """
        names = {f.name for f in fields(cls)} - {"extra", "examples"}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in event.items():
            if key in ENVELOPE:
                continue
            name = _RENAMED.get(key, key)
            if name == "examples" and isinstance(value, Mapping):
                values["examples"] = ExampleCounts(int(value.get("processed", 0)), int(value.get("total", 0)))
            elif name in names:
                values[name] = _number(value)
            else:
                extra[key] = value
        if "step" in values:
            values["step"] = int(values["step"])
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The event's fields: set values only, ``epoch`` for ``epoch_progress``, ``extra`` merged in."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None or (f.name == "skipped" and not value):
                continue
            key = next((event_key for event_key, name in _RENAMED.items() if name == f.name), f.name)
            out[key] = value.to_dict() if isinstance(value, ExampleCounts) else value
        out.update(self.extra)
        return out


def _number(value: Any) -> Any:
    """``events.jsonl`` has no NaN/Inf: they are written as strings; read them back as floats."""
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return value
