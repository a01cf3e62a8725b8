"""Continued fine-tuning (``init_from``): a run that starts from an earlier run's trained weights.

``tuneforge finetune --init-from RUN_DIR --data more.jsonl`` trains the parent run's adapter (or its
fully fine-tuned model) further on new examples, as OpenAI lets a fine-tuned model be fine-tuned
again. The adapter only fits the base and the method it was trained with, so the new run takes the
parent's base model, method and method options (``lora_r``, ...) unless the config names them, and
one that names a different one is refused before any run directory is made:

    init_from: runs/a was trained on base smollm2-135m-instruct, this run names --model /models/qwen ...

The run records where it came from in ``results.json`` ``lineage``: the parent run, its base, its
method, the SHA-256 of its weights files and the parent's own lineage (a chain of continued runs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.core.errors import CheckpointError, ConfigError
from tuneforge.core.paths import read_json_object

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig
    from tuneforge.model.methods import TrainingMethod


@dataclass(frozen=True)
class Parent:
    """The run an ``init_from`` run continues: where its weights are and what they were trained as."""

    run_dir: Path
    base: str
    method: TrainingMethod
    weights_dir: Path
    weights_sha256: str
    ancestors: dict[str, Any] | None  # the parent's own lineage, when it was a continued run too

    def lineage(self) -> dict[str, Any]:
        """What ``results.json`` ``lineage`` holds."""
        return {"parent_run": str(self.run_dir), "parent_base": self.base, "parent_method": self.method.name,
                "parent_weights": str(self.weights_dir), "parent_weights_sha256": self.weights_sha256,
                "generation": 1 + int((self.ancestors or {}).get("generation", 0)), "parent_lineage": self.ancestors}

    def describe(self) -> str:
        return (f"continuing {self.run_dir} ({self.method.name} on {self.base}, weights sha256 {self.weights_sha256[:12]})")


def resolve_init_from(config: FineTuningConfig) -> tuple[FineTuningConfig, Parent | None]:
    """``config`` completed from its ``init_from`` run (base, method, method options), and that parent.

    Raises ``ConfigError`` naming ``init_from`` when the directory is not a run, holds no trained
    weights, or was trained on another base, with another method or other method options than this
    config names. Nothing is written; the caller does this before it makes the run directory.
    """
    if not config.init_from:
        return config, None
    from tuneforge.model.methods import find_saved_weights, get_method
    from tuneforge.runs import run_config

    run_dir = Path(config.init_from)
    where = f"init_from: {run_dir}"
    if not run_dir.is_dir():
        raise ConfigError([f"{where} does not exist; give the directory of an earlier run (runs/NAME)"])
    try:
        saved = run_config(run_dir)
    except CheckpointError as error:
        raise ConfigError([f"{where}: {error}"]) from None
    if not saved:
        raise ConfigError([f"{where} is not a tuneforge run directory (no config.yaml); give the directory of an earlier run"])
    method_name = str(saved.get("method") or "lora")
    base = str(saved.get("model") or "")
    problems = []
    if "method" in config.model_fields_set and config.method != method_name:
        problems.append(f"{where} was trained with method {method_name!r}, this run names --method {config.method!r}; "
                        f"a run continues its parent's weights with the parent's method: leave --method out")
    if "model" in config.model_fields_set and not same_model(config.model, base):
        problems.append(f"{where} was trained on base {base}, this run names --model {config.model}; its weights only "
                        "fit the base they were trained on: leave --model out (the parent's base is used) or continue a run of that base")
    if problems:
        raise ConfigError(problems)
    method = get_method(method_name)
    updates: dict[str, Any] = {"method": method_name, "model": base}
    for option in method.options:
        if option not in saved:
            continue
        if option in config.model_fields_set and getattr(config, option) != saved[option]:
            problems.append(f"{where} trained {option} = {saved[option]!r}, this run names {getattr(config, option)!r}; "
                            f"the weights keep their shape: leave --{option.replace('_', '-')} out")
        updates[option] = saved[option]
    if problems:
        raise ConfigError(problems)
    found = find_saved_weights(run_dir, method_name)
    if found is None or found[1] == run_dir:
        raise ConfigError([f"{where} holds no trained weights (no {method.output_dir}/): the run has not finished; "
                           f"finish it first (tuneforge resume {run_dir}) or continue another run"])
    weights_dir = found[1]
    # Only the fields the user set, plus the parent's: the config's own defaults (packing, ...) follow the method.
    completed = type(config).model_validate({**config.model_dump(exclude_unset=True), **updates,
                                             "init_from": str(run_dir.resolve())})
    parent = Parent(run_dir=run_dir.resolve(), base=base, method=method, weights_dir=weights_dir.resolve(),
                    weights_sha256=weights_sha256(weights_dir), ancestors=_parent_lineage(run_dir))
    return completed, parent


def load_parent_weights(model: Any, parent: Parent) -> None:
    """Copy the parent's final weights into ``model`` (fresh from ``make_trainable``), exactly.

    The method's own loader where it has one (bottleneck adapters, prompt learning), else the
    checkpoint loader that resume uses (a PEFT adapter or a full model's safetensors).
    """
    from tuneforge.train.checkpoint import load_weights

    try:
        if not parent.method.load_weights(model, parent.weights_dir):
            load_weights(model, parent.weights_dir)
    except CheckpointError as error:
        raise ConfigError([f"init_from: {parent.run_dir}: {error}"]) from None


def same_model(name: str, other: str) -> bool:
    """Whether two ``model`` values name the same base (embedded names case-insensitively, paths resolved)."""
    if name.strip().lower() == other.strip().lower():
        return True
    first, second = Path(name).expanduser(), Path(other).expanduser()
    return first.exists() and second.exists() and first.resolve() == second.resolve()


def weights_sha256(weights_dir: Path) -> str:
    """SHA-256 over the weights files of a saved model or adapter (``*.safetensors``, then ``*.bin``), in name order."""
    files = sorted(weights_dir.glob("*.safetensors")) or sorted(weights_dir.glob("*.bin"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _parent_lineage(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        lineage = read_json_object(path, "").get("lineage")
    except CheckpointError:
        return None
    return lineage if isinstance(lineage, dict) else None
