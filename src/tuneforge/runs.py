"""Read what a run directory holds: its config, results, and the trained model ready to use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import yaml

from tuneforge.config import DEFAULT_MODEL
from tuneforge.core.errors import CheckpointError
from tuneforge.core.paths import read_json_object
from tuneforge.model.methods import find_saved_weights
from tuneforge.model.load import load_model, load_tokenizer, pick_device
from tuneforge.model.resolve import resolve_model


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run was started with (``config.yaml``, the values chosen for ``auto`` fields
    applied); {} when the run has none.

    Raises ``CheckpointError`` naming the file when it is damaged (not YAML, not a mapping).
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    fix = "restore it from a copy, or name the base model with --model"
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}; {fix}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is damaged (not valid YAML: {_one_line(error)}); {fix}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} is damaged (it holds a {type(loaded).__name__}, not field: value pairs); {fix}")
    # Fields left auto hold the value the run chose in ``resolved`` (train/auto.py): give the value trained with.
    resolved = loaded.get("resolved")
    chosen = {name: item["value"] for name, item in resolved.items()
              if isinstance(item, dict) and "value" in item} if isinstance(resolved, dict) else {}
    return {**loaded, **chosen}


def read_results(run_dir: Path) -> dict[str, Any]:
    """``results.json`` of a run; raises ``CheckpointError`` if the run has none or it is damaged."""
    path = run_dir / "results.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no results.json; is it a tuneforge run directory that has finished?")
    return read_json_object(path, "it is rewritten when the run finishes; `tuneforge resume` an unfinished run, "
                                  "or delete the file and run `tuneforge report` for what events.jsonl holds")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def load_trained(adapter: str | Path | None = None, model: str | None = None, device: str | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, description) for a base model, optionally with a trained run or adapter.

    ``adapter`` may be a run directory (its method's output: ``adapter/`` for LoRA, ``model/`` for
    full fine-tuning, ...) or a directory of saved weights itself (a PEFT adapter directory). The
    training method that saved the weights reloads them (``TrainingMethod.load_saved``); the base
    model defaults to the one the run was trained from.
    """
    device = device or pick_device()
    if adapter is None:
        model_dir = resolve_model(model or DEFAULT_MODEL)
        return load_model(model_dir, device), load_tokenizer(model_dir), f"base model {model or DEFAULT_MODEL}"
    path = Path(adapter)
    saved_config = run_config(path)
    found = find_saved_weights(path, saved_config.get("method") if isinstance(saved_config.get("method"), str) else None)
    if found is None:
        raise CheckpointError(
            f"{path} holds no trained model: expected a run directory with adapter/ or model/, "
            "or a PEFT adapter directory with adapter_config.json"
        )
    method, weights_dir = found
    base_name = model or saved_config.get("model") or DEFAULT_MODEL
    base_dir: list[Path] = []

    def load_base() -> Any:
        base_dir.append(resolve_model(base_name))
        return load_model(base_dir[-1], device)

    trained = method.load_saved(weights_dir, load_base, device)
    if (weights_dir / "tokenizer_config.json").is_file():
        tokenizer_dir = weights_dir
    else:
        tokenizer_dir = base_dir[-1] if base_dir else resolve_model(base_name)
    return trained, load_tokenizer(tokenizer_dir), method.describe_saved(weights_dir, base_name)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as gone)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunFollower:
    """Yields a run's events as they are written, until the run finishes or its process is gone.

    ``ended`` then says why it stopped: ``finished`` (a ``run.finished`` event closed the latest
    attempt), ``process_gone`` (the writer died without finishing: killed), ``no_follow`` (only what
    was there), or ``unknown`` (no writer process is known and nothing more came).
    """

    def __init__(self, run_dir: Path, follow: bool = True, poll_seconds: float = 0.5, quiet_seconds: float = 30.0) -> None:
        self.run_dir, self.follow, self.poll_seconds, self.quiet_seconds = run_dir, follow, poll_seconds, quiet_seconds
        self.ended: str | None = None
        self.pid: int | None = None
        self.finished = False

    def events(self) -> Iterator[dict[str, Any]]:
        import time

        from tuneforge.monitor.events import read_events

        last_seq, quiet_since = -1, time.monotonic()
        while True:
            fresh = list(read_events(self.run_dir / "events.jsonl", after=last_seq))
            for event in fresh:
                last_seq = max(last_seq, int(event.get("seq", last_seq)))
                if event.get("type") == "run.started":
                    self.pid, self.finished = event.get("pid"), False
                elif event.get("type") == "run.finished":
                    self.finished = True
                yield event
            if fresh:
                quiet_since = time.monotonic()
            if self.finished:
                self.ended = "finished"
                return
            if not self.follow:
                self.ended = "no_follow"
                return
            if self.pid is not None and not process_alive(int(self.pid)):
                if not list(read_events(self.run_dir / "events.jsonl", after=last_seq)):
                    self.ended = "process_gone"
                    return
                continue
            if self.pid is None and time.monotonic() - quiet_since > self.quiet_seconds:
                self.ended = "unknown"
                return
            time.sleep(self.poll_seconds)
