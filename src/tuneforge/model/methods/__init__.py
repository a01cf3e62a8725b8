"""Training methods: one file per method, each registering a ``TrainingMethod`` in ``METHODS``.

``get_method(name)`` resolves a config's ``method`` (a built-in name, an entry point, or a
``module:attribute`` plug-in); ``make_trainable`` is the one way a base becomes the model that
trains, used by the pipeline and by ``validate --estimate-time`` alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.base import TrainingMethod, check_method

METHODS.set_check(check_method)

from tuneforge.model.methods import (  # noqa: E402  (register the built-ins)
    lora, qlora, dora, ia3, loha, lokr, prompt_tuning, prefix_tuning, bottleneck, full,
)

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig

__all__ = ["METHODS", "TrainingMethod", "get_method", "make_trainable", "enable_gradient_checkpointing", "find_saved_weights", "full", "lora", "qlora", "dora", "ia3", "loha",
           "lokr", "prompt_tuning", "prefix_tuning", "bottleneck"]


def get_method(name: str) -> TrainingMethod:
    """The registered method ``name``; ``UnknownNameError`` lists the valid ones."""
    return METHODS.get(name)


def make_trainable(method: TrainingMethod, model: Any, config: FineTuningConfig) -> Any:
    """Wrap ``model`` by ``method``, apply its speed-ups and gradient checkpointing; return the model to train.

    Seed torch first (``config.seed``) for reproducible fresh weights: the caller does, so that
    the base evaluation before it draws nothing in between.
    """
    config = config.concrete()  # a field left auto and never resolved (no run chose it): the fixed fallback
    model = method.wrap(model, config)
    method.speed_up(model, config)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (non-reentrant: exact, and works with frozen inputs)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def find_saved_weights(path: Path, method_name: str | None = None) -> tuple[TrainingMethod, Path] | None:
    """(method, weights directory) of a run directory (or of a bare weights directory), else None.

    With ``method_name`` (from the run's ``config.yaml``) only that method's ``output_dir`` is
    looked at; without, every registered method is tried on ``path/<output_dir>`` and on ``path``.
    """
    methods = [get_method(method_name)] if method_name else [get_method(name) for name in METHODS.names()]
    for method in methods:
        if method.holds_weights(path / method.output_dir):
            return method, path / method.output_dir
    for method in methods:
        if method.holds_weights(path):
            return method, path
    return None
