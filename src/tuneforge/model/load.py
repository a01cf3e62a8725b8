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
    """A causal language model from ``path``, in fp32 unless ``dtype`` says otherwise (see model.precision)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code)
    except Exception as error:
        raise ModelLoadError(f"could not load a causal language model from {path}: {error}") from None
    return model.to(device or pick_device())


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn: EOS plus the chat end markers the vocabulary has."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for marker in END_OF_TURN_MARKERS:
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids
