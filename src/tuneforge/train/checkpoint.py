"""Checkpoints that are complete or absent, never half-written.

A checkpoint is written to a hidden temporary directory (weights or adapter, optimizer, scheduler,
RNG states, trainer state, and a manifest of SHA-256 file hashes), every file is fsynced, and the
directory is renamed into place. Only then are older checkpoints beyond the limit removed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from tuneforge.core.paths import publish_directory

MANIFEST = "manifest.json"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """Every random-number generator state training depends on."""
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    save_weights: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones down to ``keep_last``; return its path."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / checkpoint_name(step)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=checkpoints_dir))
    try:
        save_weights(staging / "weights")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        # Python/numpy RNG states hold non-tensor objects; store them as plain lists for weights_only loading.
        torch.save(_plain_rng(rng_state()), staging / "rng.pt")
        (staging / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
        files = {str(p.relative_to(staging)): _sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        (staging / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=2))
        publish_directory(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune_checkpoints(checkpoints_dir, keep_last)
    return final


def _plain_rng(state: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    plain = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached],
        "torch": state["torch"],
    }
    if "cuda" in state:
        plain["cuda"] = state["cuda"]
    return plain


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a manifest), oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.glob("step-*") if (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: p.name)


def verify_checkpoint(path: Path) -> list[str]:
    """Problems found by re-hashing every file against the manifest (empty: intact)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as error:
        return [f"{path}: unreadable manifest ({error})"]
    problems = []
    for name, expected in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif _sha256(file) != expected:
            problems.append(f"{file}: contents do not match the manifest")
    return problems


def prune_checkpoints(checkpoints_dir: Path, keep_last: int) -> None:
    for old in list_checkpoints(checkpoints_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
