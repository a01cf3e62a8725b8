"""``lora``: train small low-rank adapters (PEFT LoRA) on a frozen base; the run keeps ``adapter/``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.peft_base import PeftMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig

LORA_OPTIONS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


class LoraMethod(PeftMethod):
    name = "lora"
    description = "train small adapters"
    default_learning_rate = 1e-3
    mergeable = True
    options = LORA_OPTIONS

    def peft_config(self, model: Any, config: FineTuningConfig) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=self.target_modules(config), bias="none", task_type="CAUSAL_LM",
                          **self.lora_variant_options(config))

    def lora_variant_options(self, config: FineTuningConfig) -> dict[str, Any]:
        """Extra ``LoraConfig`` arguments of a LoRA variant (DoRA: ``use_dora=True``)."""
        return {}

    def target_modules(self, config: FineTuningConfig) -> list[str] | str:
        """The modules that get adapters; a variant method (e.g. attention-only LoRA) overrides this."""
        return config.lora_target_modules

    def speed_up(self, model: Any, config: FineTuningConfig) -> None:
        from tuneforge.model.fast_lora import speed_up_lora
        from tuneforge.model.fast_mlp import speed_up_lora_mlps

        speed_up_lora(model)
        speed_up_lora_mlps(model)  # the gated MLP recomputes SiLU and its product: half its saved activations
        super().speed_up(model, config)

    def describe_saved(self, weights_dir: Path, base_name: str) -> str:
        return f"{base_name} + adapter {weights_dir}"


LORA = METHODS.register("lora", LoraMethod())
