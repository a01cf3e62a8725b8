"""TensorBoard logs of a run: scalars per step and per evaluation, detected issues as text.

Open them with ``tensorboard --logdir RUN_DIR/tensorboard``. Written through
``torch.utils.tensorboard`` (it needs the ``tensorboard`` package, an optional extra).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

STEP_SCALARS = {
    "loss": "train/loss", "accuracy": "train/token_accuracy", "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm", "tokens_per_second": "train/tokens_per_second",
    "step_tokens_per_second": "train/step_tokens_per_second", "memory_mb": "system/memory_mb",
    "gpu_memory_mb": "system/gpu_memory_mb",
}
EVAL_SCALARS = {"validation_loss": "eval/loss", "validation_accuracy": "eval/token_accuracy",
                "validation_perplexity": "eval/perplexity"}


class TensorBoardSink:
    """Writes the events of one run to a TensorBoard log directory."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "train.step":
            self._scalars(STEP_SCALARS, event)
        elif kind == "eval.result":
            self._scalars(EVAL_SCALARS, event)
        elif kind == "issue.detected":
            text = f"**{event.get('severity')}** {event.get('kind')}: {event.get('message')}\n\n{event.get('suggestion')}"
            self.writer.add_text("issues", text, global_step=int(event.get("step", 0)))
            self.writer.flush()
        elif kind == "run.finished":
            self.writer.flush()

    def _scalars(self, names: dict[str, str], event: dict[str, Any]) -> None:
        step = int(event.get("step", 0))
        for key, tag in names.items():
            value = event.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, float(value), global_step=step)

    def close(self) -> None:
        self.writer.close()
