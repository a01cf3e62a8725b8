"""``onnx``: an ONNX Runtime GenAI model (``model.onnx``, ``genai_config.json``, tokenizer) of the merged run.

Built by onnxruntime-genai's own model builder (the Olive route: ``python -m
onnxruntime_genai.models.builder``), for the CPU at fp32 (default) or int4. The check runs the
decoder with ONNX Runtime itself on the HF tokenizer's ids (all positions at once, an empty KV
cache) and compares the export's own tokenizer (``onnxruntime_genai.Tokenizer``) with HF's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tuneforge.core.registries import EXPORTERS
from tuneforge.export import ExportCheck, ExportError, ExportResult

PRECISIONS = ("fp32", "int4")
INSTALL = "install the export extra: `pip install 'tuneforge[export]'` (onnxruntime-genai, onnxruntime, onnx, onnx-ir)"


def require_builder() -> None:
    """``ExportError`` naming what to install when onnxruntime-genai's builder cannot be imported."""
    for module in ("onnxruntime", "onnxruntime_genai", "onnx", "onnx_ir"):
        try:
            __import__(module)
        except ImportError as error:
            raise ExportError(f"{module} is not installed ({error}); {INSTALL}") from None


class OnnxExporter:
    name = "onnx"
    description = "ONNX Runtime GenAI model (onnxruntime-genai's model builder), CPU fp32 or int4"
    methods: tuple[str, ...] = ()

    def resolve_quantization(self, quantize: str | None) -> str:
        require_builder()
        name = (quantize or "fp32").lower()
        if name not in PRECISIONS:
            raise ExportError(f"unknown ONNX precision {quantize!r}; choose from: {', '.join(PRECISIONS)}")
        return name

    def preflight(self, run: Any, **_: Any) -> None:
        if run.is_adapter and not run.method.mergeable:
            raise ExportError(f"the run was trained with {run.method.name}, whose weights cannot be merged; "
                              "ONNX export needs a merged model")
        config = json.loads(((run.weights_dir if not run.is_adapter else run.base_dir()) / "config.json").read_text())
        supported = ("Llama", "Mistral", "Qwen2", "Qwen3", "Phi3", "Gemma", "Gemma2", "Gemma3", "Olmo", "Granite", "SmolLM3")
        architectures = config.get("architectures") or []
        if not any(arch.startswith(supported) for arch in architectures):
            raise ExportError(f"onnxruntime-genai's model builder does not build {', '.join(architectures) or 'this model'}; "
                              "export --format merged or gguf instead")
        heads = config.get("num_attention_heads") or 1
        head_size = config.get("head_dim") or (config.get("hidden_size", 0) // heads)
        if head_size % 16:
            raise ExportError(f"the model's attention head size is {head_size}; ONNX Runtime's CPU GroupQueryAttention "
                              "(which the builder emits) needs a multiple of 16: export --format merged or gguf instead")

    def export(self, run_dir: Path, out_dir: Path, quantize: str | None = None, **_: Any) -> ExportResult:
        from tuneforge.export.merged import merge, write_hf_directory
        from tuneforge.export.run import open_run

        run = open_run(run_dir)
        precision = self.resolve_quantization(quantize)
        self.preflight(run)
        with tempfile.TemporaryDirectory(prefix="tuneforge-onnx-", dir=out_dir.parent) as scratch:
            hf_dir = Path(scratch) / "hf"
            model, tokenizer = run.load_trained()
            write_hf_directory(merge(model), tokenizer, hf_dir)
            del model
            command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out_dir),
                       "-p", precision, "-e", "cpu", "-c", str(Path(scratch) / "cache")]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise ExportError(f"onnxruntime-genai's model builder failed (exit {done.returncode}):\n{tail}")
        return ExportResult(out_dir=out_dir, files=sorted(out_dir.iterdir()), details={"precision": precision,
                                                                                       "builder": "onnxruntime_genai.models.builder"})

    def check(self, run_dir: Path, out_dir: Path, **options: Any) -> ExportCheck:
        from tuneforge.export.parity import check_against_run

        return check_against_run(run_dir, lambda trained, tokenizer: OnnxModel(out_dir), **options)


class OnnxModel:
    """The exported decoder run by ONNX Runtime, with ONNX Runtime GenAI's tokenizer."""

    def __init__(self, directory: Path) -> None:
        import onnxruntime
        import onnxruntime_genai

        config = json.loads((directory / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
        self.session = onnxruntime.InferenceSession(str(directory / config["filename"]), providers=["CPUExecutionProvider"])
        self.layers, self.kv_heads, self.head_size = config["num_hidden_layers"], config["num_key_value_heads"], config["head_size"]
        self.names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = onnxruntime_genai.Tokenizer(onnxruntime_genai.Model(str(directory)))

    def encode(self, text: str) -> list[int]:
        return [int(token) for token in self.tokenizer.encode(text)]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        feed: dict[str, Any] = {"input_ids": np.array([list(ids)], dtype=np.int64),
                                "attention_mask": np.ones((1, len(ids)), dtype=np.int64)}
        if "position_ids" in self.names:
            feed["position_ids"] = np.arange(len(ids), dtype=np.int64)[None]
        empty = np.zeros((1, self.kv_heads, 0, self.head_size), dtype=np.float32)
        for layer in range(self.layers):
            feed[f"past_key_values.{layer}.key"] = empty
            feed[f"past_key_values.{layer}.value"] = empty
        return self.session.run(["logits"], feed)[0][0].astype(np.float32)


EXPORTERS.register("onnx", OnnxExporter())
