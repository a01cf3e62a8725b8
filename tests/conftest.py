"""Shared fixtures: an offline environment, a tiny random Llama model with a ChatML tokenizer, small datasets.

Nothing is downloaded: the tokenizer is trained here with ``tokenizers`` and the model is a random
2-layer ``LlamaForCausalLM`` saved with ``save_pretrained``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

# Set before anything imports huggingface_hub / transformers (they read some of these at import time).
_HF_HOME = tempfile.mkdtemp(prefix="tuneforge-tests-hf-")
atexit.register(shutil.rmtree, _HF_HOME, True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HOME"] = _HF_HOME
os.environ.setdefault("OMP_NUM_THREADS", "2")

from helpers import FAST, build_tiny_model, make_rows, write_jsonl  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # PEFT calls a transformers property that transformers has deprecated; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="session", autouse=True)
def tuneforge_home(tmp_path_factory: pytest.TempPathFactory):
    """Every test sees its own ``$TUNEFORGE_HOME`` root (never ~/.cache/tuneforge)."""
    home = tmp_path_factory.mktemp("tuneforge-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNEFORGE_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    """The tiny base model, loaded once (tests must not train it in place)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    return model


@pytest.fixture
def write_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``write_dataset(name="train.jsonl", rows=None)``: a jsonl file of ``rows`` (default: 40 colour rows)."""

    def write(name: str = "train.jsonl", rows: list[Any] | None = None) -> Path:
        return write_jsonl(tmp_path / name, make_rows() if rows is None else rows)

    return write


@pytest.fixture(scope="session")
def session_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "colors.jsonl", make_rows())


@pytest.fixture(scope="session")
def train_run(tiny_model_dir: Path, session_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """``train_run(**config_fields)`` runs ``FineTuningPipeline`` on the tiny model and returns the result."""
    from tuneforge.config import make_config
    from tuneforge.pipeline import FineTuningPipeline

    counter = iter(range(10**6))

    def run(**fields: Any):
        values = {"data": str(session_dataset), "model": str(tiny_model_dir), **FAST}
        values.update(fields)
        values.setdefault("output", str(tmp_path_factory.getbasetemp() / f"run-{next(counter)}"))
        return FineTuningPipeline(make_config(values)).train()

    return run


@pytest.fixture(scope="session")
def lora_run(train_run):
    """The reference LoRA run: validation + test split, base and tuned evaluated, checkpoints every epoch."""
    return train_run(test_split=0.2, learning_rate=1e-2, saving_strategy="epoch")
