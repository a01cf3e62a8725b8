"""``lokr``: Kronecker-product adapters (PEFT LoKr): a small factor ⊗ a low-rank factor per layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.peft_base import PeftMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class LokrMethod(PeftMethod):
    name = "lokr"
    description = "Kronecker-product adapters"
    default_learning_rate = 1e-3
    mergeable = True
    options = ("lora_r", "lora_alpha", "lora_target_modules")

    def peft_config(self, model: Any, config: FineTuningConfig) -> Any:
        from peft import LoKrConfig

        return LoKrConfig(r=config.lora_r, alpha=config.lora_alpha, target_modules=config.lora_target_modules,
                          task_type="CAUSAL_LM")


LOKR = METHODS.register("lokr", LokrMethod())
