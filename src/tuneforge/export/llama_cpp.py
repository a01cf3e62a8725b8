"""llama.cpp's own tools, as the ``export`` extra installs them (``make setup-export``).

Two pieces, both from one pinned source distribution of ``llama-cpp-python`` on PyPI: the built
package (``llama_cpp``: ``llama_model_quantize`` and ``Llama`` to load and run a GGUF) and the
converter scripts of the very llama.cpp commit it vendors (``convert_hf_to_gguf.py``,
``convert_lora_to_gguf.py``), unpacked to ``<venv>/share/tuneforge/llama.cpp`` (or
``$TUNEFORGE_LLAMA_CPP``). The scripts run with that commit's own ``gguf-py`` on the path: PyPI's
``gguf`` lags the converter and lacks symbols it needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tuneforge.export import ExportError

LLAMA_CPP_PYTHON = "0.3.36"  # the pinned sdist; pyproject's `export` extra and `make setup-export` use it
INSTALL = ("install the export extra: `make setup-export` (builds llama-cpp-python=={v} from source, about 20-40 "
           "minutes on 2 cores, and unpacks its llama.cpp converters into {where})")
FLOAT_TYPES = ("f32", "f16", "bf16")  # written by the converter itself
CONVERTER_TYPES = FLOAT_TYPES + ("q8_0",)

# Run a converter script with its own gguf-py first on the path. When the converter does not know a
# BPE pre-tokenizer (a model trained from scratch), TUNEFORGE_GGUF_PRE names the one tuneforge derived
# from tokenizer.json; the parity check's tokenizer comparison then proves it right or wrong.
_RUNNER = """
import os, runpy, sys
source, script = sys.argv[1], sys.argv[2]
sys.path[0:0] = [source, os.path.join(source, "gguf-py")]
pre = os.environ.get("TUNEFORGE_GGUF_PRE")
if pre and script.endswith("convert_hf_to_gguf.py"):
    from conversion import base
    known = base.TextModel.get_vocab_base_pre
    def get_vocab_base_pre(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            return pre
    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
"""


def source_dir() -> Path:
    """The unpacked llama.cpp of the pinned llama-cpp-python (where ``make setup-export`` puts it)."""
    return Path(os.environ.get("TUNEFORGE_LLAMA_CPP") or Path(sys.prefix) / "share" / "tuneforge" / "llama.cpp")


def require_tools() -> Path:
    """The llama.cpp source dir, after checking the converters and ``llama_cpp`` are installed."""
    where = source_dir()
    if not (where / "convert_hf_to_gguf.py").is_file() or not (where / "gguf-py").is_dir():
        raise ExportError(f"llama.cpp's converter is not installed ({where / 'convert_hf_to_gguf.py'} missing); "
                          + INSTALL.format(v=LLAMA_CPP_PYTHON, where=where))
    try:
        import llama_cpp  # noqa: F401
    except ImportError as error:
        raise ExportError(f"llama-cpp-python is not installed ({error}); " + INSTALL.format(v=LLAMA_CPP_PYTHON, where=where)) from None
    return where


def quantization_types() -> list[str]:
    """Every GGUF quantization name llama.cpp's quantizer knows (from ``llama_cpp``'s LLAMA_FTYPE_MOSTLY_*)."""
    import llama_cpp

    names = {name[len("LLAMA_FTYPE_MOSTLY_"):].lower() for name in dir(llama_cpp) if name.startswith("LLAMA_FTYPE_MOSTLY_")}
    return sorted(names | set(FLOAT_TYPES))


def check_quantization(quantize: str) -> str:
    """``quantize`` lower-cased, or ``ExportError`` listing the valid names."""
    name = quantize.lower()
    valid = quantization_types()
    if name not in valid:
        raise ExportError(f"unknown GGUF quantization {quantize!r}; choose from: {', '.join(valid)} "
                          "(f16 keeps the model as trained, q8_0 halves it, q4_k_m quarters it)")
    return name


def check_architecture(model_dir: Path) -> str:
    """The model's architecture when llama.cpp's converter supports it, else ``ExportError``."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    registry = (require_tools() / "conversion" / "__init__.py").read_text(encoding="utf-8")
    for architecture in architectures:
        if f'"{architecture}"' in registry:
            return architecture
    raise ExportError(f"llama.cpp's converter (llama-cpp-python {LLAMA_CPP_PYTHON}) does not support the architecture "
                      f"{', '.join(architectures) or '(none in config.json)'} of {model_dir}; export --format merged or "
                      "onnx instead, or a model llama.cpp supports (Llama, Qwen2, Mistral, Gemma, Phi3, ...)")


def fallback_pre_tokenizer(model_dir: Path) -> str | None:
    """The llama.cpp pre-tokenizer matching ``tokenizer.json`` when it is plain GPT-2 byte-level BPE, else None."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    pre = json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False):
        return "gpt-2"
    return None


def run_script(script: str, arguments: Sequence[str], env: dict[str, str] | None = None) -> None:
    """Run one of llama.cpp's converter scripts; ``ExportError`` with its last lines when it fails."""
    source = require_tools()
    command = [sys.executable, "-c", _RUNNER, str(source), str(source / script), *arguments]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise ExportError(f"llama.cpp's {script} failed (exit {done.returncode}):\n{tail}")


def convert_model(model_dir: Path, outfile: Path, outtype: str) -> dict[str, Any]:
    """``convert_hf_to_gguf.py`` of an HF directory to ``outfile``; returns what was decided (pre-tokenizer)."""
    check_architecture(model_dir)
    env, details = {}, {}
    pre = fallback_pre_tokenizer(model_dir)
    if pre:
        env["TUNEFORGE_GGUF_PRE"] = pre
        details["pre_tokenizer_if_unrecognised"] = pre
    run_script("convert_hf_to_gguf.py", [str(model_dir), "--outfile", str(outfile), "--outtype", outtype], env)
    return details


def convert_lora(adapter_dir: Path, base_dir: Path, outfile: Path, outtype: str) -> None:
    """``convert_lora_to_gguf.py`` of a PEFT adapter (its base's config from ``base_dir``)."""
    run_script("convert_lora_to_gguf.py", [str(adapter_dir), "--base", str(base_dir), "--outfile", str(outfile),
                                           "--outtype", outtype])


def quantize(source: Path, target: Path, quantization: str) -> None:
    """``llama_model_quantize`` of a float GGUF to ``quantization`` (q8_0, q4_k_m, ...)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quantization.upper()}")
    params.nthread = max(1, (os.cpu_count() or 1))
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0:
        raise ExportError(f"llama.cpp could not quantize {source.name} to {quantization} (error {code}); "
                          "try q8_0 or f16")


def read_metadata(path: Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file, read with its llama.cpp's own gguf-py."""
    sys.path.insert(0, str(require_tools() / "gguf-py"))
    try:
        import gguf
        reader = gguf.GGUFReader(str(path))
        values = {}
        for key, field in reader.fields.items():
            try:
                values[key] = field.contents()
            except Exception:  # a field type this reader cannot render as a value; not needed
                continue
        return values
    finally:
        sys.path.remove(str(require_tools() / "gguf-py"))


class GGUFModel:
    """A GGUF (optionally with a LoRA GGUF) loaded by llama-cpp-python, as llama.cpp users run it."""

    def __init__(self, model_path: Path, lora_path: Path | None = None, n_ctx: int = 1024) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None,
                                   logits_all=True, n_ctx=n_ctx, n_batch=n_ctx, n_threads=max(1, os.cpu_count() or 1),
                                   verbose=False, seed=0)

    def encode(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def chat_template(self) -> str | None:
        return self.llm.metadata.get("tokenizer.chat_template")

    def close(self) -> None:
        self.llm.close()
