"""Make a base model trainable by the chosen method: LoRA adapters (PEFT) or full fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def apply_lora(model: Any, r: int, alpha: float, dropout: float, target_modules: list[str] | str) -> Any:
    """Wrap ``model`` with fresh LoRA adapters; only the adapter weights are trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def prepare_full(model: Any) -> Any:
    """Every weight trainable."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def load_adapter(model: Any, adapter_dir: Path, trainable: bool = False) -> Any:
    """Attach a saved PEFT adapter to ``model``."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body and the output projection of a (possibly PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()
