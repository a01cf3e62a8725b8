"""The run's checkpoints: written at due steps and on interrupt, read back to resume, roll back and pick the best weights.

train/checkpoint.py is the on-disk format (atomic writes, verification, listing); this module is
what one ``fit`` does with it. A checkpoint holds the weights (the method's ``save_weights``), the
optimizer, the schedule, ``TrainState`` with the monitor's history, and every process's RNG state,
so a run restored from it continues exactly. Under FSDP the sharded state is gathered onto rank 0
and saved in the format of one process's checkpoint; restoring fills every shard from it. Rank 0
writes; the other processes wait at a barrier until the checkpoint is committed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.core.errors import CheckpointError
from tuneforge.model.methods import get_method
from tuneforge.train import distributed, fsdp
from tuneforge.train.checkpoint import (
    checkpoint_name,
    checkpoint_step,
    load_state_file,
    load_weights,
    newest_valid_checkpoint,
    read_trainer_state,
    remove_stale_staging,
    rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from tuneforge.train.distributed import rng_file
from tuneforge.train.signals import GracefulStop
from tuneforge.train.state import TrainState

if TYPE_CHECKING:
    from tuneforge.train.loop import TrainingRun


def clean_stale_staging(run: TrainingRun) -> None:
    """Remove (on rank 0) a checkpoint that was still being written when the run was killed."""
    for stale in remove_stale_staging(run.checkpoints_dir) if run.world.is_main else []:
        run.emit("checkpoint.cleaned", path=str(stale.relative_to(run.run_dir)),
                 message="removed a checkpoint that was still being written when the run stopped")


def resume_newest(run: TrainingRun) -> dict[str, Any] | None:
    """Restore the newest intact checkpoint (corrupt ones skipped, each with an event); its RNG state, or None: none."""
    rng = None
    path, skipped = newest_valid_checkpoint(run.checkpoints_dir)
    for bad in skipped:
        run.emit("checkpoint.skipped", path=str(bad.path.relative_to(run.run_dir)), problems=bad.problems,
                 message=f"skipped corrupt checkpoint {bad.path.name}: {bad.problems[0]}")
    if path is not None:
        rng = restore(run, path)
        run.outcome.resumed_from_step = run.state.step
        run.last_saved_step = run.state.step
    run.emit("train.resumed", step=run.state.step, checkpoint=str(path.relative_to(run.run_dir)) if path else None,
             message=f"resuming from {path.name}" if path else "no intact checkpoint: starting from the beginning")
    return rng


def restore(run: TrainingRun, path: Path) -> dict[str, Any]:
    """Load weights, optimizer, schedule, trainer and monitor state from checkpoint ``path``; return its RNG state.

    Raises:
        CheckpointError: ``path`` was written by a run of another plan or on other data.
    """
    saved = TrainState.from_dict(read_trainer_state(path))
    if saved.total_steps and saved.total_steps != run.total_steps:
        raise CheckpointError(f"{path} was written by a run of {saved.total_steps} steps, this one plans {run.total_steps}; "
                              "resume with the run's own settings (tuneforge resume RUN_DIR)")
    if saved.data_fingerprint and saved.data_fingerprint != run.state.data_fingerprint:
        raise CheckpointError(f"{path} was trained on other data than the data given now; resume needs the same "
                              "data files (and the same --seed, --max-length and splits)")
    load_checkpoint_weights(run, path / "weights")
    if run.fsdp:
        fsdp.load_full_optimizer(run.model, run.optimizer,
                                 load_state_file(path / "optimizer.pt") if run.world.is_main else None)
    else:
        run.optimizer.load_state_dict(load_state_file(path / "optimizer.pt"))
    run.scheduler.load_state_dict(load_state_file(path / "scheduler.pt"))
    own = path / rng_file(run.world.rank)  # each process continues its own generators
    rng = load_state_file(own if own.is_file() else path / rng_file(0))
    run.state = saved
    run.monitor.load_state_dict(saved.monitor)
    return rng


def load_checkpoint_weights(run: TrainingRun, weights_dir: Path) -> None:
    """Checkpoint weights back into the model: the method's own loader, else the generic one.

    FSDP: rank 0 loads them into its whole model, and every shard is filled from it."""
    if run.fsdp:
        if run.world.is_main:
            _load_plain_weights(run, run.plain, weights_dir)
        fsdp.load_full_weights(run.model, run.plain.state_dict() if run.world.is_main else None)
        return
    _load_plain_weights(run, run.model, weights_dir)


def _load_plain_weights(run: TrainingRun, model: Any, weights_dir: Path) -> None:
    if not get_method(run.config.method).load_weights(model, weights_dir):
        load_weights(model, weights_dir)


def save(run: TrainingRun) -> Path:
    """Checkpoint the run at its current step (the best step's checkpoint is kept from rotation); return its path."""
    state = run.state
    state.monitor = run.monitor.state_dict()
    state.train_seconds = time.perf_counter() - run.clock_start
    keep = {state.best_step} if state.best_step is not None and run.config.final_weights == "best" else set()
    rng_states = distributed.gather_objects(rng_state()) if run.world.active else None
    path = run.checkpoints_dir / checkpoint_name(state.step)
    model, optimizer = run.model, run.optimizer
    if run.fsdp:  # the whole state, gathered onto rank 0, in the format of one process's checkpoint
        weights, optimizer_state = fsdp.gather_full_state(run.model, run.optimizer)
        if run.world.is_main:
            fsdp.into_plain(run.plain, weights)
            model, optimizer = run.plain, fsdp.SavedOptimizer(optimizer_state)
    if run.world.is_main:  # the processes hold the same weights and optimizer state: one writes them
        path = save_checkpoint(run.checkpoints_dir, state.step, lambda out: run.save_weights(model, out),
                               optimizer, run.scheduler, state.to_dict(), run.config.save_total_limit, keep,
                               rng_states=rng_states)
    if run.world.active:  # the others may read it (rollback, best weights) once it is committed
        distributed.barrier()
    run.last_saved_step = state.step
    run.outcome.checkpoint = str(path.relative_to(run.run_dir))
    run.emit("checkpoint.saved", step=state.step, path=run.outcome.checkpoint, best=state.best_step == state.step)
    return path


def save_interrupted(run: TrainingRun, stop: GracefulStop) -> None:
    """A signal or ``request_stop`` asked to stop: checkpoint this step boundary (unless just saved) so resume loses nothing."""
    if run.state.step > 0 and run.last_saved_step != run.state.step:
        pause = time.perf_counter()
        save(run)
        run.state.overhead_seconds += time.perf_counter() - pause
    elif run.last_saved_step == run.state.step and run.state.step > 0:
        run.outcome.checkpoint = f"checkpoints/{checkpoint_name(run.state.step)}"
    stop.acknowledge()
    run.outcome.interrupted = stop.reason
    run.emit("train.interrupted", step=run.state.step, signal=stop.signal_name, reason=stop.reason,
             checkpoint=run.outcome.checkpoint)


def select_final_weights(run: TrainingRun) -> None:
    """With ``final_weights: best``, load the best checkpoint's weights when it is not the last step."""
    state = run.state
    run.outcome.final_weights_step = state.step
    if run.config.final_weights != "best" or state.best_step is None or state.best_step == state.step:
        return
    path = run.checkpoints_dir / checkpoint_name(state.best_step)
    problems = verify_checkpoint(path) if path.is_dir() else [f"{path} is missing"]
    if problems:
        run.emit("train.best_unavailable", step=state.best_step, problems=problems,
                 message=f"the best checkpoint ({path.name}) is not intact; keeping the last step's weights")
        return
    load_checkpoint_weights(run, path / "weights")
    run.outcome.final_weights_step = checkpoint_step(path)
    run.emit("train.best_selected", step=state.best_step, metric=run.config.best_metric, value=state.best_value,
             last_step=state.step, message=f"using the weights of step {state.best_step} "
             f"({run.config.best_metric} {state.best_value:.4g}) rather than the last step's")
