"""``TrainingMonitor``: watches the metrics of a run as it trains and names what goes wrong.

``track_metrics`` takes each step's metrics (loss, gradient norm, learning rate, step throughput,
memory) and each evaluation's, keeps a short history, and returns the issues ``detect_issues`` finds:

=====================  ========  =========================================================================
kind                   severity  detected when
=====================  ========  =========================================================================
nan_loss               error     the loss is NaN or infinite
nan_gradient           error     the loss is finite but the gradient norm is not
loss_spike             warning   a loss far above the recent ones, beyond what chance gives a step of its token count
divergence             error     the loss trends upwards, well above the best it reached (and above chance)
exploding_gradients    warning   a gradient norm many times the recent median
overfitting            warning   validation loss rose for k evaluations in a row while training loss fell
plateau                info      the training loss stopped improving while the learning rate is still high
lr_too_high            warning   early on, the loss climbs above where it started
lr_too_low             info      after the warm-up, the loss has hardly moved from where it started
throughput_drop        warning   tokens per second fell to a fraction of what the run had been doing
memory_creep           warning   memory grows step after step (a leak), measured from the level after warm-up
=====================  ========  =========================================================================

A step's loss is a mean over its labelled tokens (``trained_tokens`` in the metrics), so its noise
shrinks with their count: one answer token the model gets wrong moves the loss of a 16-token step
by a fifth of a nat, and of a 2,000-token step by nothing. The loss detectors allow for that noise
(``sampling_noise``) on top of the spread they see, so a healthy run of one-token answers in small
batches raises nothing while a real spike or divergence still stands out. Without ``trained_tokens``
they judge by the spread alone.

Every issue carries the step, a plain-language explanation with the numbers that triggered it and
a suggested fix. The monitor only observes; what to do about an issue (warn, stop, roll back) is
the training loop's policy (train/issue_policy.py). Its state is plain data, saved in checkpoints so
a resumed run keeps watching with the same history. No torch here: it runs on numbers.

Where each part lives: the detectors, one function per kind, in train/detectors.py (thresholds:
train/monitor_settings.py); what the monitor remembers, train/monitor_history.py; ``Issue`` and the
kinds' severities, train/issues.py; the noise arithmetic, train/monitor_stats.py. This module is the
monitor itself: record, detect, report each issue once (``ONCE``) or once per cool-down.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Union

from tuneforge.train import detectors
from tuneforge.train.issues import ONCE, SEVERITY, Issue, Severity
from tuneforge.train.metrics import TrainingMetrics
from tuneforge.train.monitor_history import MonitorHistory
from tuneforge.train.monitor_settings import MonitorSettings
from tuneforge.train.monitor_stats import finite, sampling_noise

if TYPE_CHECKING:
    from tuneforge.train.result_checks import ResultFinding

__all__ = ["ONCE", "SEVERITY", "Issue", "Metrics", "MonitorSettings", "Severity", "TrainingMonitor", "sampling_noise"]

Metrics = Union[Mapping[str, Any], TrainingMetrics]  # a dict of event fields, or the typed record


def _as_mapping(metrics: Metrics) -> Mapping[str, Any]:
    return metrics.to_dict() if isinstance(metrics, TrainingMetrics) else metrics


class TrainingMonitor(MonitorHistory):
    """Health checks over the metric stream of one run.

    Args:
        settings: detector thresholds.
        warmup_steps: steps of learning-rate warm-up (no learning-rate verdicts before it ends).
        total_steps: planned optimizer steps.
    """

    def track_metrics(self, metrics: Metrics) -> list[Issue]:
        """Record one step's metrics (``loss``…) or one evaluation's (``validation_loss``); return new issues.

        ``metrics`` is a dict with the fields of a ``train.step``/``eval.result`` event or a ``TrainingMetrics``.
        Give ``trained_tokens`` (the labelled tokens the loss is a mean over) for the loss checks to allow
        for the noise of small steps.
        """
        metrics = _as_mapping(metrics)
        issues = self.detect_issues(metrics)
        if "validation_loss" in metrics:
            self._record_evaluation(metrics)
        elif finite(metrics.get("loss")) and (metrics.get("grad_norm") is None or finite(metrics.get("grad_norm"))):
            self._record_step(metrics)
        return self.report(issues)

    def detect_issues(self, metrics: Metrics) -> list[Issue]:
        """The issues ``metrics`` shows against the history so far (nothing is recorded)."""
        metrics = _as_mapping(metrics)
        step = int(metrics.get("step", 0))
        if "validation_loss" in metrics:
            return [issue for issue in [detectors.overfitting(self, step, metrics)] if issue]
        non_finite = detectors.non_finite(self, step, metrics)
        if non_finite:
            return [non_finite]
        return [issue for check in detectors.STEP_DETECTORS if (issue := check(self, step, metrics))]

    def validate_results(self, predictions: Iterable[Mapping[str, Any]] | Any) -> list[ResultFinding]:
        """Findings about the answers themselves (empty, echoing the prompt, one label for all, never ending, labels
        never answered), each with a message, a count and examples: see ``tuneforge.train.result_checks``.

        ``predictions``: dicts with ``reference`` and ``prediction`` (``ModelEvaluation.predictions``, or the
        rows of ``predictions.jsonl``, whose ``tuned`` answer is read), or a ``ModelEvaluation``.
        """
        from tuneforge.train.result_checks import check_predictions

        return check_predictions(predictions)

    def generate_report(self, run_dir: Path) -> Path:
        """Write ``run_dir/report.html`` (curves with these issues on the timeline) and return its path."""
        from tuneforge.report import write_report

        return write_report(run_dir)

    def report(self, issues: list[Issue]) -> list[Issue]:
        """Drop repeats (once-per-run kinds, and any kind within its cool-down); remember the rest."""
        fresh = []
        for issue in issues:
            last = self.reported.get(issue.kind)
            if last is not None and (issue.kind in ONCE or issue.step - last < self.settings.cooldown_steps):
                continue
            self.reported[issue.kind] = issue.step
            self.issues.append(issue)
            fresh.append(issue)
        return fresh
