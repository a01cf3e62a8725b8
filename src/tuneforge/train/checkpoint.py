"""Checkpoints that are complete or invisible, never half-written, and loaded without pickle.

A checkpoint is written to a hidden staging directory (weights or adapter in safetensors, optimizer,
scheduler and RNG states, ``trainer_state.json``), every file is fsynced, a manifest with each file's
SHA-256 and size is written last, and the directory is renamed into place (then its parent is
fsynced). A directory without a manifest that verifies is never used: resume skips it, with the
reason. Older checkpoints are pruned only after the new one is committed; the best one is kept.

Optimizer, scheduler and RNG states are loaded with ``torch.load(weights_only=True)``: a file that
needs pickle's arbitrary objects is refused, not executed.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError

from tuneforge.core.errors import CheckpointError
from tuneforge.core.paths import file_sha256, fsync_dir, publish_directory

MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
FORMAT_VERSION = 1
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_step(path: Path) -> int:
    """The step a ``step-NNNNNN`` directory holds."""
    return int(path.name.split("-", 1)[1])




def rng_state() -> dict[str, Any]:
    """Every random-number generator state training depends on, as tensors and plain lists."""
    import numpy as np

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    save_weights: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    keep_last: int,
    keep: set[int] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically, then prune to the ``keep_last`` newest plus the steps in ``keep``.

    ``rng_states``: every process's RNG state, by rank, in a distributed run (``rng.pt`` holds rank
    0's, ``rng-rank<r>.pt`` the others'); default: this process's, captured first.

    Raises:
        CheckpointError: the checkpoint could not be written (the disk is full, for example). The
            staging directory is removed and every earlier checkpoint is left as it was.
    """
    rngs = rng_states or [rng_state()]  # first: nothing below may move a generator before it is captured
    final = checkpoints_dir / checkpoint_name(step)
    staging: Path | None = None
    try:
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=checkpoints_dir))
        save_weights(staging / "weights")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        for rank, rng in enumerate(rngs):
            torch.save(rng, staging / ("rng.pt" if rank == 0 else f"rng-rank{rank}.pt"))  # train/distributed.rng_file
        (staging / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2))
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        manifest = {
            "format_version": FORMAT_VERSION, "step": step,
            "files": {str(p.relative_to(staging)): file_sha256(p) for p in files},
            "sizes": {str(p.relative_to(staging)): p.stat().st_size for p in files},
            "versions": _versions(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))  # written last: the commit marker
        publish_directory(staging, final)
    except (OSError, RuntimeError, SafetensorError) as error:  # torch and safetensors report a full disk in their own types
        raise CheckpointError(_write_failure(checkpoints_dir, step, error)) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    prune_checkpoints(checkpoints_dir, keep_last, keep or set())
    return final


def _versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _write_failure(checkpoints_dir: Path, step: int, error: Exception) -> str:
    newest = [p.name for p in list_checkpoints(checkpoints_dir)]
    kept = f"the earlier checkpoints are intact (newest: {newest[-1]})" if newest else "no earlier checkpoint exists"
    text = (getattr(error, "strerror", None) or str(error)).splitlines()[0] if str(error) else type(error).__name__
    if not _disk_full(checkpoints_dir, error):
        return (f"could not write checkpoint {checkpoint_name(step)} in {checkpoints_dir}: {text}; {kept}. "
                f"Fix the cause, then continue with: tuneforge resume {checkpoints_dir.parent}")
    if "No space left on device" not in text:
        text = f"No space left on device: {text}"
    return (f"could not write checkpoint {checkpoint_name(step)} in {checkpoints_dir}: the disk is full ({text}); "
            f"{kept}. Free some space, then continue with: tuneforge resume {checkpoints_dir.parent}")


def _disk_full(directory: Path, error: Exception) -> bool:
    if getattr(error, "errno", None) in _NO_SPACE or "No space left" in str(error) or "os error 28" in str(error):
        return True
    try:  # torch's zip writer says only "file write failed": look at the disk itself
        return shutil.disk_usage(directory).free < 1 << 20
    except OSError:
        return False


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Committed checkpoints (those with a manifest), oldest first. Verify before loading one."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.glob("step-*") if p.name[5:].isdigit() and (p / MANIFEST).is_file()]
    return sorted(found, key=checkpoint_step)


def verify_checkpoint(path: Path) -> list[str]:
    """Problems found by re-hashing every file against the manifest (empty: intact)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("it lists no files")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [f"{path}: unreadable manifest ({error})"]
    problems = []
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file_sha256(file) != expected:
            problems.append(f"{file}: contents do not match the manifest")
    for required in ("optimizer.pt", "scheduler.pt", "rng.pt", TRAINER_STATE):
        if required not in files:
            problems.append(f"{path / required}: not in the manifest")
    return problems


@dataclass
class SkippedCheckpoint:
    path: Path
    problems: list[str]


def newest_valid_checkpoint(checkpoints_dir: Path, before_step: int | None = None) -> tuple[Path | None, list[SkippedCheckpoint]]:
    """The newest checkpoint that verifies (optionally with a step below ``before_step``), and those skipped as corrupt."""
    skipped = []
    for path in reversed(list_checkpoints(checkpoints_dir)):
        if before_step is not None and checkpoint_step(path) >= before_step:
            continue
        problems = verify_checkpoint(path)
        if not problems:
            return path, skipped
        skipped.append(SkippedCheckpoint(path, problems))
    return None, skipped


def remove_stale_staging(checkpoints_dir: Path) -> list[Path]:
    """Delete the staging directories a killed save left behind (never a committed checkpoint)."""
    if not checkpoints_dir.is_dir():
        return []
    stale = [p for p in checkpoints_dir.iterdir() if p.name.startswith(".step-") and p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        fsync_dir(checkpoints_dir)
    return stale


def remove_checkpoints_after(checkpoints_dir: Path, step: int) -> None:
    """Delete checkpoints newer than ``step`` (after a rollback they belong to an abandoned trajectory)."""
    for path in list_checkpoints(checkpoints_dir):
        if checkpoint_step(path) > step:
            shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(checkpoints_dir: Path, keep_last: int, keep: set[int] | None = None) -> None:
    """Remove all but the ``keep_last`` newest checkpoints and those whose step is in ``keep``."""
    for old in list_checkpoints(checkpoints_dir)[:-keep_last]:
        if checkpoint_step(old) not in (keep or set()):
            shutil.rmtree(old, ignore_errors=True)


def load_state_file(path: Path) -> Any:
    """A ``torch.save`` file loaded without running pickled code (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError...: all mean "do not trust this file"
        raise CheckpointError(
            f"{path}: refused to load ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'unreadable'}); "
            "checkpoint state must be plain tensors and numbers, and this file is corrupt or holds pickled objects"
        ) from None


def read_trainer_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path / TRAINER_STATE}: unreadable ({error})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path / TRAINER_STATE}: not a tuneforge trainer state")
    return state


def load_weights(model: Any, weights_dir: Path) -> None:
    """Copy the weights saved in ``weights_dir`` (a PEFT adapter or a full model) into ``model``, exactly."""
    from safetensors.torch import load_file

    adapter = weights_dir / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(str(adapter)))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise CheckpointError(f"{adapter} does not fit this model: unexpected tensors {unexpected[:3]}")
        return
    files = sorted(weights_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{weights_dir} holds no safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {tensor.data_ptr() for name, tensor in model.state_dict().items() if name in state}
    untied = [name for name in missing if model.state_dict()[name].data_ptr() not in loaded]
    if unexpected or untied:
        raise CheckpointError(f"{weights_dir} does not fit this model: missing {untied[:3]}, unexpected {unexpected[:3]}")
