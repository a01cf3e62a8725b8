"""``merged``: the adapter folded into the base (PEFT ``merge_and_unload``) as a plain HF safetensors directory.

The directory holds ``config.json``, ``model.safetensors``, the tokenizer with its chat template and
``generation_config.json`` (EOS = every end-of-turn token), so ``AutoModelForCausalLM.from_pretrained``
loads it with nothing of tuneforge installed. A full fine-tuning run is copied as it is (saved fp32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tuneforge.core.registries import EXPORTERS
from tuneforge.export import ExportCheck, ExportError, ExportResult


class MergedExporter:
    name = "merged"
    description = "the adapter merged into the base: an HF safetensors directory (transformers, vLLM, TGI)"
    methods: tuple[str, ...] = ()
    quantizations = ("fp32",)

    def resolve_quantization(self, quantize: str | None) -> str | None:
        if quantize not in (None, "fp32", "f32"):
            raise ExportError(f"--format merged writes fp32 safetensors; drop --quantize {quantize}, "
                              "or choose --format gguf for f16/bf16/q8_0/q4_k_m")
        return None

    def preflight(self, run: Any, **_: Any) -> None:
        if not run.method.mergeable and run.is_adapter:
            raise ExportError(f"the run was trained with {run.method.name}, whose weights cannot be merged into the base; "
                              "export it with --format gguf-lora or use the adapter directory as it is")

    def export(self, run_dir: Path, out_dir: Path, **_: Any) -> ExportResult:
        from tuneforge.export.run import open_run

        run = open_run(run_dir)
        self.preflight(run)
        model, tokenizer = run.load_trained()
        merged = merge(model)
        write_hf_directory(merged, tokenizer, out_dir)
        return ExportResult(out_dir=out_dir, files=sorted(out_dir.iterdir()), details={"merged": run.is_adapter})

    def check(self, run_dir: Path, out_dir: Path, **options: Any) -> ExportCheck:
        from tuneforge.export.parity import check_against_run

        return check_against_run(run_dir, lambda trained, tokenizer: HFExport(out_dir), **options)


def merge(model: Any) -> Any:
    """The plain transformers model: a PEFT model's adapters folded in, anything else as it is."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def write_hf_directory(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Weights (safetensors), tokenizer with chat template, and a generation config that stops at end of turn."""
    from tuneforge.data.tokenize import chat_template_of
    from tuneforge.model.load import end_of_turn_ids

    model.save_pretrained(out_dir, safe_serialization=True)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template_of(tokenizer)  # the template the run trained with
    tokenizer.save_pretrained(out_dir)
    generation = model.generation_config
    ends = end_of_turn_ids(tokenizer)
    if ends:
        generation.eos_token_id = ends if len(ends) > 1 else ends[0]
    if tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    generation.save_pretrained(out_dir)


class HFExport:
    """A merged directory loaded by plain transformers, as a user would."""

    def __init__(self, directory: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(directory)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(input_ids=torch.tensor([list(ids)])).logits[0].float().numpy()


EXPORTERS.register("merged", MergedExporter())
