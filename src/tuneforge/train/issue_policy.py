"""What the loop does about the monitor's issues: the run's policy (``issue_actions``) per issue kind.

Each kind maps to ``ignore``, ``warn`` (an ``issue.detected`` event), ``stop`` (end the run here)
or ``rollback`` (train/rollback.py: back to the last healthy checkpoint with a lower learning
rate; stop when there is none). A non-finite loss or gradient is never applied; its default is
``stop``, every other kind's ``warn``. The monitor (train/monitor.py) only observes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tuneforge.core.errors import TrainingError
from tuneforge.train.checkpoint import newest_valid_checkpoint
from tuneforge.train.issues import Issue
from tuneforge.train.rollback import roll_back

if TYPE_CHECKING:
    from tuneforge.train.loop import TrainingRun


class RolledBack(Exception):
    """Raised inside the loop's optimizer step when a non-finite step was rolled back."""


def handle_issues(run: TrainingRun, issues: list[Issue]) -> str | None:
    """Report ``issues`` and apply their policies. Returns "rollback", a reason to stop, or None."""
    decision: str | None = None
    for issue in issues:
        action = run.actions.get(issue.kind, "warn")
        if action == "ignore":
            continue
        if action == "rollback" and decision is None:
            issue.action = "rollback"
            run.emit("issue.detected", **issue.to_dict())
            if roll_back(run, issue):
                return "rollback"
            decision = issue.kind  # nothing to roll back to: stop instead
            continue
        issue.action = action
        run.emit("issue.detected", **issue.to_dict())
        if action == "stop" and decision is None:
            decision = issue.kind
    return decision


def on_non_finite(run: TrainingRun, issue: Issue, fresh: bool, loss: float, grad_norm: float) -> None:
    """Apply the policy for a non-finite loss or gradient (the update was not applied).

    Raises:
        RolledBack: the run went back to a checkpoint (its state is the checkpoint's now).
        TrainingError: the policy is ``stop``, or ``rollback`` found nothing to roll back to.
    """
    action = run.actions.get(issue.kind, "stop")
    issue.action = "warn" if action == "ignore" else action
    if action in ("stop", "rollback") or (fresh and action == "warn"):
        run.emit("issue.detected", **issue.to_dict())
    if action == "rollback" and roll_back(run, issue):
        raise RolledBack()
    if action in ("stop", "rollback"):
        newest = newest_valid_checkpoint(run.checkpoints_dir)[0]
        kept = f"; the last good checkpoint is {newest.name}" if newest else ""
        what = f"the loss became {loss}" if not math.isfinite(loss) else f"the gradient norm became {grad_norm}"
        raise TrainingError(f"training stopped at step {issue.step}: {what}{kept}; lower --learning-rate and try again")
