"""``gguf`` and ``gguf-lora``: llama.cpp's own converter and quantizer on a finished run.

``gguf``: the run merged into its base (as ``merged`` does), converted by ``convert_hf_to_gguf.py``
to f32/f16/bf16, then quantized by ``llama_model_quantize`` to any other type (q8_0, q4_k_m, ...):
``model-<type>.gguf``. ``gguf-lora``: the adapter alone (``convert_lora_to_gguf.py``) as
``adapter-<type>.gguf`` for llama.cpp's ``--lora`` / ``Llama(lora_path=...)``; its check loads it on
a GGUF of the base. Both are checked through llama-cpp-python (``llama_cpp.GGUFModel``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.core.registries import EXPORTERS
from tuneforge.export import ExportCheck, ExportError, ExportResult
from tuneforge.export import llama_cpp as tools


class GGUFExporter:
    name = "gguf"
    description = "one GGUF file for llama.cpp, LM Studio, Ollama (llama.cpp's converter and quantizer)"
    methods: tuple[str, ...] = ()
    default_quantization = "f16"

    def resolve_quantization(self, quantize: str | None) -> str:
        tools.require_tools()
        return tools.check_quantization(quantize or self.default_quantization)

    def preflight(self, run: Any, **_: Any) -> None:
        if run.is_adapter and not run.method.mergeable:
            raise ExportError(f"the run was trained with {run.method.name}, whose weights cannot be merged into the base; "
                              "export --format gguf-lora instead")
        tools.check_architecture(run.weights_dir if not run.is_adapter else run.base_dir())

    def export(self, run_dir: Path, out_dir: Path, quantize: str | None = None, **_: Any) -> ExportResult:
        from tuneforge.export.merged import merge, write_hf_directory
        from tuneforge.export.run import open_run

        run = open_run(run_dir)
        quantization = self.resolve_quantization(quantize)
        self.preflight(run)
        with tempfile.TemporaryDirectory(prefix="tuneforge-gguf-", dir=out_dir.parent) as scratch:
            hf_dir = Path(scratch) / "hf"
            model, tokenizer = run.load_trained()
            write_hf_directory(merge(model), tokenizer, hf_dir)
            del model
            target = out_dir / gguf_name("model", quantization)
            if quantization in tools.FLOAT_TYPES:
                details = tools.convert_model(hf_dir, target, quantization)
            else:
                floats = Path(scratch) / "model-f32.gguf"
                details = tools.convert_model(hf_dir, floats, "f32")
                tools.quantize(floats, target, quantization)
        details.update(gguf=target.name, llama_cpp_python=tools.LLAMA_CPP_PYTHON)
        return ExportResult(out_dir=out_dir, files=[target], details=details)

    def check(self, run_dir: Path, out_dir: Path, **options: Any) -> ExportCheck:
        from tuneforge.export.parity import check_against_run

        path = find_gguf(out_dir, "model")
        return check_against_run(run_dir, lambda trained, tokenizer: tools.GGUFModel(path), **options)


class GGUFLoraExporter:
    name = "gguf-lora"
    description = "the LoRA adapter alone as a GGUF, for llama.cpp --lora on a GGUF of its base"
    methods: tuple[str, ...] = ("lora",)
    default_quantization = "f16"

    def resolve_quantization(self, quantize: str | None) -> str:
        tools.require_tools()
        name = (quantize or self.default_quantization).lower()
        if name not in tools.CONVERTER_TYPES:
            raise ExportError(f"a GGUF LoRA adapter can be written as {', '.join(tools.CONVERTER_TYPES)}, not {quantize!r}; "
                              "quantize the base model instead (--format gguf --quantize q4_k_m)")
        return name

    def preflight(self, run: Any, **_: Any) -> None:
        if not run.is_adapter:
            raise ExportError(f"{run.run_dir} was trained with {run.method.name} and has no adapter; export "
                              "--format gguf (the whole model) instead")
        refuse_what_lora_gguf_cannot_hold(run.weights_dir, run.base_dir())
        tools.check_architecture(run.base_dir())

    def export(self, run_dir: Path, out_dir: Path, quantize: str | None = None, **_: Any) -> ExportResult:
        from tuneforge.export.run import open_run

        run = open_run(run_dir)
        quantization = self.resolve_quantization(quantize)
        self.preflight(run)
        target = out_dir / gguf_name("adapter", quantization)
        tools.convert_lora(run.weights_dir, run.base_dir(), target, quantization)
        return ExportResult(out_dir=out_dir, files=[target], details={"gguf": target.name, "base_model": run.base_model,
                                                                      "llama_cpp_python": tools.LLAMA_CPP_PYTHON})

    def check(self, run_dir: Path, out_dir: Path, **options: Any) -> ExportCheck:
        from tuneforge.export.parity import check_against_run
        from tuneforge.export.run import open_run

        adapter = find_gguf(out_dir, "adapter")
        with tempfile.TemporaryDirectory(prefix="tuneforge-gguf-base-") as scratch:
            base = Path(scratch) / "base-f32.gguf"  # f32: the check measures the adapter, not a base quantization
            tools.convert_model(open_run(run_dir).base_dir(), base, "f32")
            return check_against_run(run_dir, lambda trained, tokenizer: tools.GGUFModel(base, lora_path=adapter), **options)


def refuse_what_lora_gguf_cannot_hold(adapter_dir: Path, base_dir: Path) -> None:
    """``ExportError`` for adapters ``convert_lora_to_gguf.py`` cannot represent (saved whole modules, tied heads)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{adapter_dir} is a {config.get('peft_type')} adapter; llama.cpp loads LoRA adapters only: "
                          "export --format merged or gguf instead")
    saved = config.get("modules_to_save") or []
    if saved:
        raise ExportError(f"{adapter_dir} saves whole modules ({', '.join(saved)}) beside its LoRA weights; a GGUF LoRA "
                          "holds only low-rank updates: export --format gguf (merged) instead")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    tied = json.loads((base_dir / "config.json").read_text(encoding="utf-8")).get("tie_word_embeddings", False)
    embedded = [t for t in targets if any(word in t for word in ("embed_tokens", "lm_head"))]
    if embedded and tied:
        raise ExportError(f"{adapter_dir} trains {', '.join(embedded)} of a model whose embeddings and lm_head are tied; "
                          "llama.cpp cannot apply that as a LoRA: export --format gguf (merged) instead")


def gguf_name(stem: str, quantization: str) -> str:
    return f"{stem}-{quantization}.gguf"


def find_gguf(directory: Path, stem: str) -> Path:
    found = sorted(directory.glob(f"{stem}-*.gguf"))
    if not found:
        raise ExportError(f"{directory} holds no {stem}-*.gguf; export it first (without --check-only)")
    return found[0]


EXPORTERS.register("gguf", GGUFExporter())
EXPORTERS.register("gguf-lora", GGUFLoraExporter())
