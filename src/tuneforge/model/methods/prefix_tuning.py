"""``prefix_tuning``: learned key/value prefixes in every attention layer (PEFT prefix tuning).

The wrapper passes them as past key values in ``PeftModel.forward``, so the loss runs through it
(``forward_through_wrapper``), and rows cannot be packed (``packing`` defaults to off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.peft_base import PeftMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class PrefixTuningMethod(PeftMethod):
    name = "prefix_tuning"
    description = "learned key/value prefixes in every attention layer"
    default_learning_rate = 1e-2
    forward_through_wrapper = True
    supports_packing = False
    options = ("num_virtual_tokens", "prefix_projection")

    def peft_config(self, model: Any, config: FineTuningConfig) -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
                                  prefix_projection=config.prefix_projection)


PREFIX_TUNING = METHODS.register("prefix_tuning", PrefixTuningMethod())
