"""Rollback: go back to the newest intact checkpoint from before an issue began, with a lower learning rate.

The learning rate (the schedule's base rates and the optimizer's current ones) is multiplied by
``rollback_lr_factor`` for every rollback, at most ``max_rollbacks`` times; checkpoints after the
one rolled back to are removed, and the data position and RNG states are the checkpoint's, so the
run retrains from there exactly as a resume would, only slower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.train import distributed
from tuneforge.train.checkpoint import newest_valid_checkpoint, remove_checkpoints_after, set_rng_state
from tuneforge.train.issues import Issue
from tuneforge.train.run_checkpoints import restore

if TYPE_CHECKING:
    from tuneforge.train.loop import TrainingRun


def roll_back(run: TrainingRun, issue: Issue) -> bool:
    """Go back to the newest intact checkpoint from before ``issue`` began, with a lower learning rate.

    Returns False (with a ``train.rollback_refused`` event) when the rollbacks are used up or no
    checkpoint is old enough; the caller then stops the run.
    """
    state, config = run.state, run.config
    if state.rollbacks >= config.max_rollbacks:
        run.emit("train.rollback_refused", step=issue.step, reason=issue.kind,
                 message=f"already rolled back {state.rollbacks} times (--max-rollbacks); stopping instead")
        return False
    limit = issue.since_step if issue.since_step is not None else issue.step - 1
    path, _ = newest_valid_checkpoint(run.checkpoints_dir, before_step=limit + 1)
    if path is None:
        run.emit("train.rollback_refused", step=issue.step, reason=issue.kind,
                 message=f"no intact checkpoint from step {limit} or before to roll back to; stopping instead "
                         "(a smaller --save-steps leaves more points to roll back to)")
        return False
    scale, rollbacks, skipped = state.lr_scale * config.rollback_lr_factor, state.rollbacks + 1, state.skipped_steps
    rng = restore(run, path)
    ratio = scale / run.state.lr_scale
    run.scheduler.base_lrs = [lr * ratio for lr in run.scheduler.base_lrs]
    for group in run.optimizer.param_groups:
        group["lr"] *= ratio
        if "initial_lr" in group:
            group["initial_lr"] *= ratio
    run.state.lr_scale, run.state.rollbacks, run.state.skipped_steps = scale, rollbacks, skipped
    if run.world.is_main:
        remove_checkpoints_after(run.checkpoints_dir, run.state.step)
    if run.world.active:
        distributed.barrier()
    run.last_saved_step = run.state.step
    set_rng_state(rng)
    run.emit("train.rollback", from_step=issue.step, to_step=run.state.step, reason=issue.kind,
             learning_rate_scale=scale, checkpoint=str(path.relative_to(run.run_dir)),
             message=f"rolled back from step {issue.step} to {path.name} after {issue.kind}; "
                     f"learning rate now x{scale:g}")
    return True
