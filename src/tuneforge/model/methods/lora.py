"""``lora``: train small low-rank adapters (PEFT LoRA) on a frozen base; the run keeps ``adapter/``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.base import TrainingMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class LoraMethod(TrainingMethod):
    name = "lora"
    description = "train small adapters"
    output_dir = "adapter"
    default_learning_rate = 1e-3
    freezes_base = True
    mergeable = True

    def wrap(self, model: Any, config: FineTuningConfig) -> Any:
        from tuneforge.model.adapters import apply_lora

        return apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, self.target_modules(config))

    def target_modules(self, config: FineTuningConfig) -> list[str] | str:
        """The modules that get adapters; a variant method (e.g. attention-only LoRA) overrides this."""
        return config.lora_target_modules

    def speed_up(self, model: Any, config: FineTuningConfig) -> None:
        from tuneforge.model.fast_lora import speed_up_lora

        speed_up_lora(model)
        super().speed_up(model, config)

    def holds_weights(self, directory: Path) -> bool:
        return (directory / "adapter_config.json").is_file()

    def load_saved(self, weights_dir: Path, load_base: Callable[[], Any], device: str) -> Any:
        from tuneforge.model.adapters import load_adapter

        return load_adapter(load_base(), weights_dir)

    def describe_saved(self, weights_dir: Path, base_name: str) -> str:
        return f"{base_name} + adapter {weights_dir}"


LORA = METHODS.register("lora", LoraMethod())
