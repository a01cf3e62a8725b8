"""``TrainState``: where a run is (step, data position) and what it has measured, as plain JSON.

It is saved in every checkpoint as ``trainer_state.json``. With the batch order a pure function of
(seed, epoch), ``(epoch, batches_done_in_epoch)`` is the exact data position to resume from.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch being trained (0-based)
    batches_done_in_epoch: int = 0  # batches of that epoch already trained on
    examples_seen: int = 0
    trained_tokens: int = 0
    processed_tokens: int = 0
    train_seconds: float = 0.0  # wall time spent in the loop so far, over every attempt
    overhead_seconds: float = 0.0  # of which evaluations and checkpoint writes
    final_train_loss: float | None = None
    validation_history: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None  # the evaluation with the best best_metric so far
    best_value: float | None = None
    evals_without_improvement: int = 0  # for early stopping
    lr_scale: float = 1.0  # product of the rollback learning-rate factors so far
    rollbacks: int = 0
    skipped_steps: int = 0  # updates not applied because the loss or gradients were not finite
    total_steps: int = 0
    data_fingerprint: str = ""
    monitor: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def epoch_progress(self, batches_in_epoch: int) -> float:
        """Epochs done, fractional: the ``epoch`` field of step metrics and evaluations."""
        return round(self.epoch + min(1.0, self.batches_done_in_epoch / batches_in_epoch), 4)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainState:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def data_fingerprint(token_rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> str:
    """SHA-256 of every example's token ids and labels, in order: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for input_ids, labels in token_rows:
        digest.update(array("q", input_ids).tobytes())
        digest.update(b"|")
        digest.update(array("q", labels).tobytes())
        digest.update(b"\n")
    return digest.hexdigest()[:32]
