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


MERGE_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "cat")


def combine_lora_adapters(model: Any, names: list[str], weights: list[float], how: str, density: float,
                          combined: str) -> Any:
    """Add adapter ``combined`` to the PEFT ``model`` = the weighted combination of its LoRA adapters ``names``.

    ``how`` is PEFT's ``combination_type`` (``add_weighted_adapter``): ``linear`` (same ranks; a
    weighted sum of the low-rank factors), ``cat`` (the factors side by side: exact weighted sum of
    the updates), ``ties`` / ``dare_linear`` / ``dare_ties`` (the updates pruned to ``density`` and
    sign-resolved or rescaled first). Only ``combined`` stays loaded and active.
    """
    from tuneforge.core.errors import ConfigError

    if how not in MERGE_METHODS:
        raise ConfigError([f"how: unknown combination {how!r}; choose from {', '.join(MERGE_METHODS)}"])
    options: dict[str, Any] = {} if how in ("linear", "cat") else {"density": density}
    try:
        model.add_weighted_adapter(names, weights, combined, combination_type=how, **options)
    except ValueError as error:  # PEFT's messages: mixed ranks for linear, non-LoRA adapters, ...
        hint = " (adapters of different ranks combine with --how cat)" if how == "linear" else ""
        raise ConfigError([f"cannot combine {', '.join(names)} with {how}: {error}{hint}"]) from None
    model.set_adapter(combined)
    for name in names:
        model.delete_adapter(name)
    return model


def save_adapter_as(model: Any, name: str, out_dir: Path) -> None:
    """Save the PEFT ``model``'s adapter ``name`` directly in ``out_dir`` (PEFT would nest it in ``out_dir/name``)."""
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as staging:
        model.save_pretrained(staging, selected_adapters=[name], safe_serialization=True)
        saved = Path(staging) / name if (Path(staging) / name).is_dir() else Path(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.move(str(saved), str(out_dir))


def resident_bytes(model: Any) -> int:
    """Bytes the weights of ``model`` occupy in memory: every tensor of its state (4-bit weights and their
    quantization constants included), each shared tensor once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in model.state_dict().values():
        if not hasattr(tensor, "untyped_storage"):
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total
