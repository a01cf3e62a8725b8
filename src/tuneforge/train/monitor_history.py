"""``MonitorHistory``: what the training monitor remembers of a run's metrics, and its checkpointed state.

A short history of step losses (with their token counts), gradient norms, throughputs and memory
readings; the levels the detectors compare against (where training started, the best smoothed
loss and 10-step level, the peak learning rate, the memory baseline taken after warm-up); the
evaluations with the training loss between them; and which issue kinds were reported when. Its
state is plain data, saved in checkpoints so a resumed run keeps watching with the same history.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import fields
from typing import Any, Mapping

from tuneforge.train.issues import Issue
from tuneforge.train.monitor_settings import MonitorSettings
from tuneforge.train.monitor_stats import finite, step_tokens


class MonitorHistory:
    """The recorded metrics of one run and the levels derived from them (the detectors read, never write them).

    Args:
        settings: detector thresholds (the history's length and the memory warm-up come from them).
        warmup_steps: steps of learning-rate warm-up.
        total_steps: planned optimizer steps.
    """

    def __init__(self, settings: MonitorSettings | None = None, warmup_steps: int = 0, total_steps: int = 0) -> None:
        self.settings = settings or MonitorSettings()
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        keep = max(self.settings.window, 10) * 3
        self.losses: deque[float] = deque(maxlen=keep)
        self.grad_norms: deque[float] = deque(maxlen=keep)
        self.throughputs: deque[float] = deque(maxlen=keep)
        self.memory: deque[float] = deque(maxlen=keep)
        self.tokens: deque[float] = deque(maxlen=keep)  # labelled tokens of each step in ``losses`` (0: unknown)
        self.first_losses: list[float] = []  # the first few losses: where training started
        self.best_smoothed: float | None = None  # lowest median of 5 consecutive losses
        self.best_smoothed_step = 0
        self.best_level: float | None = None  # lowest mean of 10 consecutive losses, by at least 1%
        self.best_level_step = 0
        self.peak_learning_rate = 0.0
        self.memory_baseline: float | None = None
        self.memory_readings = 0  # memory readings seen, warm-up included
        self.memory_settling: list[float] = []  # readings after the warm-up, until the baseline is taken
        self.memory_rebased = False  # the baseline was taken again after the first evaluation
        self.evaluations: list[dict[str, float]] = []  # {step, validation_loss, train_loss}
        self.train_loss_sum, self.train_loss_count = 0.0, 0  # since the last evaluation
        self.reported: dict[str, int] = {}  # kind -> last step reported
        self.issues: list[Issue] = []

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers) to store in a checkpoint."""
        return {
            "losses": list(self.losses), "grad_norms": list(self.grad_norms), "throughputs": list(self.throughputs),
            "memory": list(self.memory), "tokens": list(self.tokens), "memory_readings": self.memory_readings,
            "memory_settling": self.memory_settling, "memory_rebased": self.memory_rebased,
            "first_losses": self.first_losses, "best_smoothed": self.best_smoothed,
            "best_smoothed_step": self.best_smoothed_step, "best_level": self.best_level,
            "best_level_step": self.best_level_step, "peak_learning_rate": self.peak_learning_rate,
            "memory_baseline": self.memory_baseline, "evaluations": self.evaluations,
            "train_loss_sum": self.train_loss_sum, "train_loss_count": self.train_loss_count, "reported": self.reported,
            "issues": [issue.to_dict() for issue in self.issues],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("losses", "grad_norms", "throughputs", "memory", "tokens"):
            target: deque[float] = getattr(self, name)
            target.clear()
            target.extend(state.get(name, []))
        if len(self.tokens) != len(self.losses):  # a checkpoint from before token counts were kept
            self.tokens.clear()
            self.tokens.extend([0.0] * len(self.losses))
        self.memory_readings = int(state.get("memory_readings", len(self.memory)))
        self.memory_settling = list(state.get("memory_settling", []))
        self.memory_rebased = bool(state.get("memory_rebased", False))
        self.first_losses = list(state.get("first_losses", []))
        self.best_smoothed = state.get("best_smoothed")
        self.best_smoothed_step = int(state.get("best_smoothed_step", 0))
        self.best_level = state.get("best_level")
        self.best_level_step = int(state.get("best_level_step", 0))
        self.peak_learning_rate = float(state.get("peak_learning_rate", 0.0))
        self.memory_baseline = state.get("memory_baseline")
        self.evaluations = list(state.get("evaluations", []))
        self.train_loss_sum = float(state.get("train_loss_sum", 0.0))
        self.train_loss_count = int(state.get("train_loss_count", 0))
        self.reported = {str(k): int(v) for k, v in state.get("reported", {}).items()}
        names = {f.name for f in fields(Issue)}
        self.issues = [Issue(**{k: v for k, v in item.items() if k in names}) for item in state.get("issues", [])]

    # ------------------------------------------------------------------ recording

    def _record_step(self, metrics: Mapping[str, Any]) -> None:
        loss = float(metrics["loss"])
        self.losses.append(loss)
        self.tokens.append(step_tokens(metrics))
        if len(self.first_losses) < 3:
            self.first_losses.append(loss)
        self.train_loss_sum += loss
        self.train_loss_count += 1
        if finite(metrics.get("grad_norm")):
            self.grad_norms.append(float(metrics["grad_norm"]))
        if finite(metrics.get("learning_rate")):
            self.peak_learning_rate = max(self.peak_learning_rate, float(metrics["learning_rate"]))
        if finite(metrics.get("step_tokens_per_second")):
            self.throughputs.append(float(metrics["step_tokens_per_second"]))
        memory = metrics.get("gpu_memory_mb", metrics.get("memory_mb"))
        if finite(memory):
            self._record_memory(float(memory))
        step = int(metrics.get("step", 0))
        smoothed = self._smoothed()
        if smoothed is not None and (self.best_smoothed is None or smoothed < self.best_smoothed):
            self.best_smoothed, self.best_smoothed_step = smoothed, step
        if len(self.losses) >= 10:
            level = sum(list(self.losses)[-10:]) / 10  # the plateau's yardstick: a mean over 10 steps, steadier than 5
            if self.best_level is None or level < self.best_level * 0.99:
                self.best_level, self.best_level_step = level, step

    def _record_memory(self, memory: float) -> None:
        """Keep the reading; take the baseline once the warm-up is over.

        Allocators, caches and the first batches of each shape fill memory over the first steps (the
        demo grew 523 MB that way and stopped): growth is measured from the median of the
        ``memory_baseline_steps`` readings after ``memory_warmup_steps``, and again after the first
        evaluation, which allocates its own batches once.
        """
        s = self.settings
        self.memory.append(memory)
        self.memory_readings += 1
        if self.memory_baseline is None and self.memory_readings > s.memory_warmup_steps:
            self.memory_settling.append(memory)
            if len(self.memory_settling) >= s.memory_baseline_steps:
                self.memory_baseline = statistics.median(self.memory_settling)

    def _record_evaluation(self, metrics: Mapping[str, Any]) -> None:
        if not self.memory_rebased:
            self.memory_rebased = True
            self.memory_baseline, self.memory_settling = None, []
        self.evaluations.append({"step": int(metrics.get("step", 0)), "validation_loss": float(metrics["validation_loss"]),
                                 "train_loss": self.mean_train_loss()})
        self.train_loss_sum, self.train_loss_count = 0.0, 0

    def _smoothed(self, n: int = 5) -> float | None:
        """Median of the last ``n`` losses: a level that one odd batch does not move."""
        if len(self.losses) < n:
            return None
        return statistics.median(list(self.losses)[-n:])

    def token_loss(self, level: float) -> float:
        """What one wrong answer token costs, in nats: about the untrained loss (at least 2, at most 20)."""
        untrained = self.first_losses[0] if self.first_losses else level
        return min(20.0, max(2.0, untrained))

    def mean_train_loss(self) -> float:
        """The mean training loss since the last evaluation (NaN when no step was recorded since)."""
        return self.train_loss_sum / self.train_loss_count if self.train_loss_count else float("nan")
