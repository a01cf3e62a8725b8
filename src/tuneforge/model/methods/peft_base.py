"""``PeftMethod``: the shared part of every method whose trained weights are a PEFT adapter.

A PEFT method only says which PEFT config it trains (``peft_config``); wrapping, saving
(``adapter_config.json`` + ``adapter_model.safetensors`` in the run's ``adapter/``), recognising and
reloading the adapter are the same for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tuneforge.model.methods.base import TrainingMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class PeftMethod(TrainingMethod):
    """A frozen base plus a PEFT adapter of the type ``peft_config`` returns."""

    output_dir = "adapter"
    default_learning_rate = 1e-3
    freezes_base = True
    mergeable = False

    def peft_config(self, model: Any, config: FineTuningConfig) -> Any:
        """The PEFT config (``LoraConfig``, ``IA3Config``, ...) of a fresh adapter for ``model``."""
        raise NotImplementedError(f"training method {self.name!r} does not implement peft_config()")

    def wrap(self, model: Any, config: FineTuningConfig) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model, config))

    def load_weights(self, model: Any, weights_dir: Path) -> bool:
        """Prompt learning's adapter loads through PEFT, which reports the ``prompt_embeddings`` it has
        just loaded into the prompt encoder as unexpected; every other PEFT adapter uses the loop's loader."""
        if not getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
            return False
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        from tuneforge.core.errors import CheckpointError

        file = Path(weights_dir) / "adapter_model.safetensors"
        result = set_peft_model_state_dict(model, load_file(str(file)))
        unexpected = [key for key in getattr(result, "unexpected_keys", []) if key != "prompt_embeddings"]
        if unexpected:
            raise CheckpointError(f"{file} does not fit this model: unexpected tensors {unexpected[:3]}")
        return True

    def holds_weights(self, directory: Path) -> bool:
        return (directory / "adapter_config.json").is_file()

    def load_saved(self, weights_dir: Path, load_base: Callable[[], Any], device: str) -> Any:
        from tuneforge.model.adapters import load_adapter

        return load_adapter(load_base(), weights_dir)

    def describe_saved(self, weights_dir: Path, base_name: str) -> str:
        return f"{base_name} + {self.name} adapter {weights_dir}"


def model_type(model: Any) -> str:
    """The architecture name PEFT's default target tables are keyed by (``llama``, ``qwen2``, ...)."""
    return str(getattr(getattr(model, "config", None), "model_type", ""))
