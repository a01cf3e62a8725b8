"""``ia3``: learned scaling vectors on chosen activations (PEFT IA³); the fewest trainable parameters of all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.errors import ConfigError
from tuneforge.core.registries import METHODS
from tuneforge.model.methods.peft_base import PeftMethod, model_type

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class Ia3Method(PeftMethod):
    name = "ia3"
    description = "learned scales of attention and feed-forward activations"
    default_learning_rate = 1e-2  # one scale per channel starting at 1: small rates barely move it
    mergeable = True
    options = ("ia3_target_modules", "ia3_feedforward_modules")

    def peft_config(self, model: Any, config: FineTuningConfig) -> Any:
        from peft import IA3Config
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
            TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
        )

        kind = model_type(model)
        targets = config.ia3_target_modules or TARGETS.get(kind)
        if targets is None:
            raise ConfigError([f"ia3_target_modules: PEFT has no default IA3 modules for model type {kind!r}; "
                               "name them, e.g. --ia3-target-modules k_proj,v_proj,down_proj"])
        feedforward = config.ia3_feedforward_modules
        if feedforward is None:
            feedforward = [name for name in FEEDFORWARD.get(kind, []) if name in targets]
        stray = [name for name in feedforward if name not in targets]
        if stray:
            raise ConfigError([f"ia3_feedforward_modules: {', '.join(stray)} must also be in ia3_target_modules "
                               f"({', '.join(targets)})"])
        return IA3Config(target_modules=list(targets), feedforward_modules=list(feedforward), task_type="CAUSAL_LM")


IA3 = METHODS.register("ia3", Ia3Method())
