"""``full``: train every weight; the run keeps the whole model in ``model/``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.base import TrainingMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class FullMethod(TrainingMethod):
    name = "full"
    description = "train every weight"
    output_dir = "model"
    default_learning_rate = 5e-5
    freezes_base = False  # fp32 masters; bf16 runs under autocast (model.precision.forward_context)
    mergeable = False  # nothing to merge: the output is the whole model

    def wrap(self, model: Any, config: FineTuningConfig) -> Any:
        from tuneforge.model.adapters import prepare_full

        return prepare_full(model)

    def describe_saved(self, weights_dir: Path, base_name: str) -> str:
        return f"fully fine-tuned model from {weights_dir.parent}"


FULL = METHODS.register("full", FullMethod())
