"""``Issue``: one problem the training monitor found, with its severity by kind and how often a kind is reported.

The vocabulary shared by the detectors (train/detectors.py), the monitor (train/monitor.py), the
loop's policy (train/issue_policy.py) and the events (``issue.detected`` carries ``Issue.to_dict()``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tuneforge.train.monitor_stats import finite

Severity = Literal["info", "warning", "error"]

SEVERITY: dict[str, Severity] = {
    "nan_loss": "error", "nan_gradient": "error", "loss_spike": "warning", "divergence": "error",
    "exploding_gradients": "warning", "overfitting": "warning", "plateau": "info", "lr_too_high": "warning",
    "lr_too_low": "info", "throughput_drop": "warning", "memory_creep": "warning",
}
# Reported at most once per run; the others at most once per ``cooldown_steps``.
ONCE = {"lr_too_high", "lr_too_low", "plateau", "memory_creep", "overfitting"}


@dataclass
class Issue:
    """One detected problem: what, when, why it matters and what to try."""

    kind: str
    step: int
    message: str
    suggestion: str
    severity: Severity = "warning"
    evidence: dict[str, float] = field(default_factory=dict)
    since_step: int | None = None  # where the trouble began, when that is earlier than ``step``
    action: str = "warn"  # what the run did about it: warn, stop, rollback (set by the loop's policy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_issue(kind: str, step: int, message: str, suggestion: str, **evidence: Any) -> Issue:
    """An ``Issue`` of ``kind`` (its severity from ``SEVERITY``); ``evidence``'s finite numbers rounded to 6 places.

    A ``since_step`` in ``evidence`` becomes the issue's ``since_step``.
    """
    since = evidence.pop("since_step", None)
    clean = {key: round(float(value), 6) for key, value in evidence.items() if finite(value)}
    return Issue(kind, step, message, suggestion, SEVERITY[kind], clean, since)
