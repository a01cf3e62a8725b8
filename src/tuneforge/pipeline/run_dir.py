"""The run directory: where a run goes, which one a resume may continue, and publishing the final weights into it.

A run never overwrites a directory that holds files; a resume continues only a run with the same
training settings that no live process is still writing and that has not already succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tuneforge.config import FineTuningConfig
from tuneforge.core.errors import ConfigError
from tuneforge.core.paths import publish_directory
from tuneforge.core.status import RunStatus
from tuneforge.model.methods import TrainingMethod, get_method
from tuneforge.model.resolve import EMBEDDED_MODELS
from tuneforge.monitor.events import read_events

RUN_DATA = "data"  # RUN_DIR/data/: the prepared splits the run trains on (data/snapshot.py)

# Settings a resumed run may change: they do not touch the training trajectory.
RESUME_MAY_CHANGE = {"resume", "output", "name", "report_to", "logging_steps", "evaluate_base", "max_eval_examples",
                     "baselines", "baseline_shots", "baseline_retriever", "judge", "judge_rubric", "forgetting_check",
                     "max_new_tokens", "evaluation_metrics", "json_schema", "cost_per_hour", "on_issue", "max_rollbacks", "estimate_steps",
                     "distributed"}  # (a checkpoint of a DDP, FSDP or one-process run is the same)


def with_absolute_paths(config: FineTuningConfig) -> FineTuningConfig:
    """``config`` with its data files and a local model as absolute paths (names and hub ids stay as they are).

    The run's ``config.yaml`` then means the same thing from any directory: ``resume``, ``chat --adapter``
    and ``eval --adapter`` find the data and the base model wherever they are started. A path that
    does not exist here is left alone (it is reported when it is used).
    """
    updates: dict[str, str] = {}
    for name in ("data", "validation_data", "test_data", "model", "init_from"):
        value = getattr(config, name)
        if not value or (name == "model" and value.strip().lower() in EMBEDDED_MODELS):
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and path.exists():
            updates[name] = str(path.resolve())
    return config.model_copy(update=updates) if updates else config


def default_run_dir(config: FineTuningConfig) -> Path:
    """``runs/<name>``: the config's name, else its adapter name, else model, method and the time."""
    # --adapter-name: runs on one base kept side by side as runs/<adapter name>/
    name = config.name or config.adapter_name or f"{Path(config.model).name.lower()}-{get_method(config.method).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / name


def free_run_dir(config: FineTuningConfig) -> Path:
    """The run directory to use; refuses one that already holds files (never overwrite a run)."""
    run_dir = Path(config.output) if config.output else default_run_dir(config)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ConfigError([f"output: {run_dir} already exists and is not empty; choose another --output or remove it"])
    return run_dir


def resumable_run_dir(config: FineTuningConfig) -> tuple[Path, FineTuningConfig]:
    """The run directory to resume, and ``config`` with the values its first attempt chose for the ``auto`` fields.

    It must hold a run whose training settings match this config, that no live process is writing
    and that has not already succeeded; otherwise ``ConfigError`` says which and how to go on.
    """
    from tuneforge.config import load_config

    if not config.output:
        raise ConfigError(["resume: name the run directory to resume with --output (or use: tuneforge resume RUN_DIR)"])
    run_dir = Path(config.output)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError([f"resume: {run_dir} is not a tuneforge run directory (no config.yaml); "
                           "start a new run without --resume"])
    saved = with_absolute_paths(load_config(run_dir / "config.yaml"))
    if saved.resolved and not config.resolved:  # train with the values the first attempt chose
        config = config.model_copy(update={"resolved": saved.resolved})
    changed = [f"{name}: the run has {getattr(saved, name)!r}, this config {getattr(config, name)!r}"
               for name in type(config).model_fields
               if name not in RESUME_MAY_CHANGE and getattr(saved, name) != getattr(config, name)]
    if changed:
        raise ConfigError(changed + [f"a resumed run keeps its own settings: run `tuneforge resume {run_dir}`"])
    writer = live_writer(run_dir)
    if writer is not None:
        raise ConfigError([f"resume: {run_dir} is still being trained by process {writer}; "
                           f"stop it first (Ctrl-C or kill -TERM {writer} saves a checkpoint), then resume"])
    results = run_dir / "results.json"
    if results.is_file():
        try:
            status = json.loads(results.read_text()).get("status")
        except (OSError, ValueError):
            status = None
        if status == RunStatus.SUCCEEDED:
            raise ConfigError([f"resume: {run_dir} has already finished (results.json says succeeded); nothing to resume"])
    return run_dir, config


def live_writer(run_dir: Path) -> int | None:
    """The process still writing ``run_dir`` (its latest attempt has no run.finished and is alive), if any."""
    from tuneforge.runs import process_alive

    pid, finished = None, True
    for event in read_events(run_dir / "events.jsonl"):
        if event.get("type") == "run.started":
            pid, finished = event.get("pid"), False
        elif event.get("type") == "run.finished":
            finished = True
    if finished or not isinstance(pid, int) or pid == os.getpid():
        return None
    return pid if process_alive(pid) else None


def publish_final(model: Any, tokenizer: Any, run_dir: Path, method: TrainingMethod) -> None:
    """Save the final weights in the method's ``output_dir`` (``adapter/``, ``model/``) through a staging directory."""
    final = run_dir / method.output_dir
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=run_dir))
    try:
        method.save(model, staging)
        tokenizer.save_pretrained(staging)
        publish_directory(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
