"""``loha``: low-rank Hadamard-product adapters (PEFT LoHa): rank r², for the parameters of rank 2r LoRA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.peft_base import PeftMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class LohaMethod(PeftMethod):
    name = "loha"
    description = "low-rank Hadamard-product adapters"
    default_learning_rate = 1e-3
    mergeable = True
    options = ("lora_r", "lora_alpha", "lora_target_modules")

    def peft_config(self, model: Any, config: FineTuningConfig) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(r=config.lora_r, alpha=config.lora_alpha, target_modules=config.lora_target_modules,
                          task_type="CAUSAL_LM")


LOHA = METHODS.register("loha", LohaMethod())
