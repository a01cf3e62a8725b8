"""``MonitorSettings``: the thresholds of the training monitor's detectors (train/detectors.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MonitorSettings:
    """Thresholds of the detectors. The defaults are deliberately conservative: a false alarm costs trust."""

    window: int = 20  # trailing steps for robust statistics
    min_history: int = 8  # steps before spike and gradient checks start
    spike_z: float = 6.0  # robust z-score (median / MAD) of a spike
    spike_ratio: float = 1.3  # ... and at least this many times the trailing median
    spike_min_rise: float = 0.25  # ... and this much above it in nats: near zero a ratio is noise
    divergence_ratio: float = 1.3  # smoothed loss this many times its best, and rising
    divergence_min_rise: float = 0.25  # ... and this much above it in nats: near zero a ratio is noise
    divergence_noise_z: float = 4.0  # ... and this many times the chance noise of a 5-step level
    gradient_ratio: float = 10.0  # gradient norm this many times the trailing median
    gradient_reference_tokens: int = 64  # ... times sqrt(this / the step's labelled tokens) when a step has fewer
    overfitting_evals: int = 2  # consecutive rising validation losses
    plateau_steps: int = 60  # steps without a 1% improvement of the smoothed loss
    plateau_min_lr_fraction: float = 0.2  # no plateau alarm once the schedule has decayed below this
    lr_high_ratio: float = 1.15  # smoothed loss this many times its start, early in training
    lr_low_steps: int = 30  # steps after the warm-up before judging a learning rate too low
    lr_low_improvement: float = 0.02  # ... by less than this relative improvement
    throughput_ratio: float = 0.25  # recent tokens/s below this fraction of the run's median
    memory_growth_mb: float = 512.0  # growth that counts as creep (and at least memory_growth_ratio)
    memory_growth_ratio: float = 0.25
    memory_warmup_steps: int = 20  # allocators and caches fill over the first steps: the baseline is taken after them
    memory_baseline_steps: int = 10  # readings whose median is the baseline (taken again after the first evaluation)
    cooldown_steps: int = 25
