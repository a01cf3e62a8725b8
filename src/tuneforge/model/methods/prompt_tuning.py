"""``prompt_tuning``: learned virtual-token embeddings put before every input (PEFT prompt tuning).

The wrapper prepends them in ``PeftModel.forward``, so the loss runs through it
(``forward_through_wrapper``), and rows cannot be packed (``packing`` defaults to off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.peft_base import PeftMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class PromptTuningMethod(PeftMethod):
    name = "prompt_tuning"
    description = "learned virtual tokens before the input"
    default_learning_rate = 3e-2  # PEFT's and the paper's range: embeddings need large steps
    forward_through_wrapper = True
    supports_packing = False
    options = ("num_virtual_tokens", "prompt_tuning_init_text")

    def peft_config(self, model: Any, config: FineTuningConfig) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit

        text = config.prompt_tuning_init_text
        return PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=text, tokenizer_name_or_path=str(model.name_or_path) if text else None)


PROMPT_TUNING = METHODS.register("prompt_tuning", PromptTuningMethod())
