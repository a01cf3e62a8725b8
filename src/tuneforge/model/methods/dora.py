"""``dora``: weight-decomposed LoRA (PEFT ``use_dora``): a learned magnitude per output row plus a LoRA direction.

The fused LoRA forward (``model/fast_lora.py``) steps aside for DoRA layers (they carry a
``lora_variant``), so they run PEFT's own forward: results equal PEFT's, at DoRA's extra cost of
the weight norm per step (measured in BENCHMARKS.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import METHODS
from tuneforge.model.methods.lora import LoraMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class DoraMethod(LoraMethod):
    name = "dora"
    description = "weight-decomposed LoRA (magnitude + low-rank direction)"
    mergeable = True

    def lora_variant_options(self, config: FineTuningConfig) -> dict[str, Any]:
        return {"use_dora": True}


DORA = METHODS.register("dora", DoraMethod())
