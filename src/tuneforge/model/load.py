"""Load a base model and its tokenizer from a local directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.errors import ModelLoadError
from tuneforge.core.tokens import END_OF_TURN_MARKERS


def pick_device() -> str:
    """``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer of ``path``, with a pad token set (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as error:
        raise ModelLoadError(f"could not load the tokenizer from {path}: {error}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: Path, device: str | None = None, trust_remote_code: bool = False, dtype: Any = None) -> Any:
    """A causal language model from ``path``, in fp32 unless ``dtype`` says otherwise (see model.precision).

    On a CPU the weights load in the dtype they are stored in (memory-mapped from the safetensors file, read
    lazily) and are then converted one tensor at a time, each tensor's file pages let go once it is converted
    (``cast_parameters``). Converting while loading, as ``from_pretrained(dtype=...)`` does, keeps every page of
    the file resident next to the converted copies until the end: an fp32 SmolLM2-1.7B-shaped checkpoint loaded
    in bf16 peaked at 10.4 GB for 3.5 GB of weights, above what its training step then needed.
    """
    import torch
    from transformers import AutoModelForCausalLM

    target, device = dtype or torch.float32, device or pick_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto" if device == "cpu" else target,
                                                     trust_remote_code=trust_remote_code)
    except Exception as error:
        raise ModelLoadError(f"could not load a causal language model from {path}: {error}") from None
    cast_parameters(model, target)
    return model.to(device)


def cast_parameters(model: Any, dtype: Any) -> int:
    """Convert ``model``'s floating-point parameters to ``dtype`` in place, one at a time; return how many changed.

    Each converted tensor's old data, when it lay in a memory-mapped file, is dropped from the resident set at
    once (``core.memory.release_file_pages``) rather than when the file is unmapped after the last one. Tied
    parameters stay tied (the ``Parameter`` objects are kept, their data replaced); modules the model keeps in
    fp32 in half precision (``_keep_in_fp32_modules``, as ``from_pretrained`` honours) stay fp32.
    """
    import torch

    from tuneforge.core.memory import file_mappings, release_file_pages

    keep = set(getattr(model, "_keep_in_fp32_modules", None) or []) if dtype in (torch.float16, torch.bfloat16) else set()
    mappings, changed = file_mappings(), 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.is_floating_point() or parameter.dtype == dtype or set(name.split(".")) & keep:
                continue
            old = parameter.data
            parameter.data = old.to(dtype)
            if old.device.type == "cpu":
                release_file_pages(old.data_ptr(), old.numel() * old.element_size(), mappings)
            changed += 1
    if hasattr(model, "config"):  # as from_pretrained(dtype=...) records it (save_pretrained writes it)
        model.config.dtype = dtype
    return changed


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn: EOS plus the chat end markers the vocabulary has."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for marker in END_OF_TURN_MARKERS:
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids
