"""When the loop evaluates and saves: ``evaluation_strategy``/``eval_steps`` and ``saving_strategy``/``save_steps``."""

from __future__ import annotations


def is_due(strategy: str, every: int, step: int, end_of_epoch: bool, total_steps: int) -> bool:
    """Whether an evaluation or save is due after optimizer step ``step`` under ``strategy``.

    ``steps``: every ``every`` steps; ``epoch``: at the end of each epoch; both also at the last
    step; any other strategy (``no``): never.
    """
    if strategy == "steps":
        return step % every == 0 or step == total_steps
    if strategy == "epoch":
        return end_of_epoch or step == total_steps
    return False
