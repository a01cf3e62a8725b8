"""The numbers the training monitor's detectors reason with: finiteness, a step's token count, chance noise, slope.

A step's loss is a mean over its labelled tokens (``trained_tokens`` in the metrics), so its noise
shrinks with their count; ``sampling_noise`` is that noise. No torch here: it runs on numbers.
"""

from __future__ import annotations

import math
from typing import Any, Mapping


def finite(value: Any) -> bool:
    """Whether ``value`` is an int or float and finite (None, strings, NaN and infinities are not)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def step_tokens(metrics: Mapping[str, Any]) -> float:
    """The step's labelled-token count from ``trained_tokens``; 0 when the metrics do not say."""
    value = metrics.get("trained_tokens")
    return float(value) if finite(value) and value > 0 else 0.0


def sampling_noise(level: float, tokens: float, token_loss: float) -> float:
    """The standard deviation that a mean loss over ``tokens`` labelled tokens shows by chance at ``level``.

    Per-token losses are far from normal: most tokens cost little and the few the model gets wrong
    cost about ``token_loss`` nats each. Counting those as Poisson with mean ``level * tokens /
    token_loss`` gives ``sqrt(level * token_loss / tokens + (token_loss / tokens) ** 2)``: the 1/sqrt(n)
    of a mean, plus a floor of one wrong token in ``tokens`` that keeps a level near zero from making
    every wrong answer look like an event. Returns 0 when ``tokens`` is unknown (0).
    """
    if tokens <= 0:
        return 0.0
    per_token = token_loss / tokens
    return math.sqrt(max(level, 0.0) * per_token + per_token**2)


def slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    denominator = sum((i - mean_x) ** 2 for i in range(n))
    return sum((i - mean_x) * (y - mean_y) for i, y in enumerate(values)) / denominator if denominator else 0.0
