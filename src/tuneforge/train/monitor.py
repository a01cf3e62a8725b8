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
the training loop's policy. Its state is plain data, saved in checkpoints so a resumed run keeps
watching with the same history. No torch here: it runs on numbers.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Union

from tuneforge.train.metrics import TrainingMetrics

if TYPE_CHECKING:
    from tuneforge.train.result_checks import ResultFinding

Severity = Literal["info", "warning", "error"]
Metrics = Union[Mapping[str, Any], TrainingMetrics]  # a dict of event fields, or the typed record

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


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _as_mapping(metrics: Metrics) -> Mapping[str, Any]:
    return metrics.to_dict() if isinstance(metrics, TrainingMetrics) else metrics


def _tokens(metrics: Mapping[str, Any]) -> float:
    """The step's labelled-token count from ``trained_tokens``; 0 when the metrics do not say."""
    value = metrics.get("trained_tokens")
    return float(value) if _finite(value) and value > 0 else 0.0


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


def _slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    denominator = sum((i - mean_x) ** 2 for i in range(n))
    return sum((i - mean_x) * (y - mean_y) for i, y in enumerate(values)) / denominator if denominator else 0.0


class TrainingMonitor:
    """Health checks over the metric stream of one run.

    Args:
        settings: detector thresholds.
        warmup_steps: steps of learning-rate warm-up (no learning-rate verdicts before it ends).
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

    # ------------------------------------------------------------------ the public vocabulary

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
        elif _finite(metrics.get("loss")) and (metrics.get("grad_norm") is None or _finite(metrics.get("grad_norm"))):
            self._record_step(metrics)
        return self.report(issues)

    def detect_issues(self, metrics: Metrics) -> list[Issue]:
        """The issues ``metrics`` shows against the history so far (nothing is recorded)."""
        metrics = _as_mapping(metrics)
        step = int(metrics.get("step", 0))
        if "validation_loss" in metrics:
            return [issue for issue in [self._overfitting(step, metrics)] if issue]
        non_finite = self._non_finite(step, metrics)
        if non_finite:
            return [non_finite]
        checks = (self._loss_spike, self._divergence, self._exploding_gradients, self._plateau, self._lr_too_high,
                  self._lr_too_low, self._throughput_drop, self._memory_creep)
        return [issue for check in checks if (issue := check(step, metrics))]

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

    # ------------------------------------------------------------------ bookkeeping

    def _record_step(self, metrics: Mapping[str, Any]) -> None:
        loss = float(metrics["loss"])
        self.losses.append(loss)
        self.tokens.append(_tokens(metrics))
        if len(self.first_losses) < 3:
            self.first_losses.append(loss)
        self.train_loss_sum += loss
        self.train_loss_count += 1
        if _finite(metrics.get("grad_norm")):
            self.grad_norms.append(float(metrics["grad_norm"]))
        if _finite(metrics.get("learning_rate")):
            self.peak_learning_rate = max(self.peak_learning_rate, float(metrics["learning_rate"]))
        if _finite(metrics.get("step_tokens_per_second")):
            self.throughputs.append(float(metrics["step_tokens_per_second"]))
        memory = metrics.get("gpu_memory_mb", metrics.get("memory_mb"))
        if _finite(memory):
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
        train_loss = self.train_loss_sum / self.train_loss_count if self.train_loss_count else float("nan")
        self.evaluations.append({"step": int(metrics.get("step", 0)), "validation_loss": float(metrics["validation_loss"]),
                                 "train_loss": train_loss})
        self.train_loss_sum, self.train_loss_count = 0.0, 0

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

    def _smoothed(self, n: int = 5) -> float | None:
        """Median of the last ``n`` losses: a level that one odd batch does not move."""
        if len(self.losses) < n:
            return None
        return statistics.median(list(self.losses)[-n:])

    def _token_loss(self, level: float) -> float:
        """What one wrong answer token costs, in nats: about the untrained loss (at least 2, at most 20)."""
        untrained = self.first_losses[0] if self.first_losses else level
        return min(20.0, max(2.0, untrained))

    def _issue(self, kind: str, step: int, message: str, suggestion: str, **evidence: Any) -> Issue:
        since = evidence.pop("since_step", None)
        clean = {key: round(float(value), 6) for key, value in evidence.items() if _finite(value)}
        return Issue(kind, step, message, suggestion, SEVERITY[kind], clean, since)

    # ------------------------------------------------------------------ the detectors

    def _non_finite(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        loss, grad_norm = metrics.get("loss"), metrics.get("grad_norm")
        if not _finite(loss):
            return self._issue("nan_loss", step, f"the training loss is {loss}, not a finite number",
                               "lower --learning-rate (try 3-10x lower), keep --max-grad-norm on, and check the data for "
                               "empty or extreme examples")
        if grad_norm is not None and not _finite(grad_norm):
            return self._issue("nan_gradient", step, f"the gradient norm is {grad_norm} although the loss ({loss:.4g}) is finite",
                               "lower --learning-rate; if it persists, train in fp32 and look for extreme examples")
        return None

    def _loss_spike(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        s = self.settings
        if len(self.losses) < s.min_history:
            return None
        recent = list(self.losses)[-s.window:]
        counts = list(self.tokens)[-s.window:]
        median = statistics.median(recent)
        tokens = _tokens(metrics)
        # Deviations rescaled to this step's token count: a step of fewer tokens is noisier by sqrt(n).
        spread = 1.4826 * statistics.median(abs(x - median) * (math.sqrt(n / tokens) if n and tokens else 1.0)
                                            for x, n in zip(recent, counts))
        noise = sampling_noise(median, tokens, self._token_loss(median))
        loss = float(metrics["loss"])
        z = (loss - median) / max(spread, noise, 0.01 * abs(median), 1e-8)
        if z > s.spike_z and loss > s.spike_ratio * median and loss - median > s.spike_min_rise:
            chance = f", {tokens:.0f} labelled tokens" if tokens else ""
            return self._issue("loss_spike", step,
                               f"the loss jumped to {loss:.4g}, {loss / median:.1f}x the recent median of {median:.4g} "
                               f"(robust z-score {z:.0f}{chance})",
                               "a single odd batch is harmless; repeated spikes mean the learning rate is too high: "
                               "lower --learning-rate or --max-grad-norm, or check this step's examples",
                               loss=loss, median=median, z_score=z, trained_tokens=tokens, chance_noise=noise)
        return None

    def _divergence(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        s = self.settings
        if len(self.losses) + 1 < s.window or self.best_smoothed is None:
            return None
        recent = list(self.losses)[-(s.window - 1):] + [float(metrics["loss"])]
        smoothed = statistics.median(recent[-5:])
        counts = list(self.tokens)[-4:] + [_tokens(metrics)]  # the tokens behind ``smoothed``; 0 where unknown
        window_tokens = sum(counts) if all(counts) else 0.0
        noise = sampling_noise(smoothed, window_tokens, self._token_loss(smoothed))
        half = len(recent) // 2
        earlier, later = statistics.median(recent[:half]), statistics.median(recent[half:])
        slope = _slope(recent)
        # Medians, not means: a single spike is loss_spike's business, a trend is this one's.
        # The best is the lowest of many noisy levels, the current one is noisy too: the rise must beat chance.
        rise = smoothed - self.best_smoothed
        rose = (smoothed > s.divergence_ratio * self.best_smoothed and rise > s.divergence_min_rise
                and rise > s.divergence_noise_z * noise)
        if rose and later > earlier * 1.1 and slope > 0:
            return self._issue("divergence", step,
                               f"the loss is rising: its recent average {smoothed:.4g} is {smoothed / self.best_smoothed:.1f}x "
                               f"the best it reached ({self.best_smoothed:.4g} at step {self.best_smoothed_step})",
                               "training is diverging: lower --learning-rate (3-10x), or roll back with "
                               "--on-issue divergence=rollback",
                               smoothed_loss=smoothed, best_smoothed_loss=self.best_smoothed, slope_per_step=slope,
                               chance_noise=noise,
                               since_step=self.best_smoothed_step)
        return None

    def _exploding_gradients(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        s = self.settings
        norm = metrics.get("grad_norm")
        if not _finite(norm) or len(self.grad_norms) < s.min_history:
            return None
        median = statistics.median(list(self.grad_norms)[-s.window:])
        # One answer token the model gets badly wrong dominates the mean gradient of a step of few tokens
        # (batch 1 of one-word answers: 30x the median by chance); a fault is orders of magnitude.
        tokens = _tokens(metrics)
        ratio = s.gradient_ratio * (max(1.0, math.sqrt(s.gradient_reference_tokens / tokens)) if tokens else 1.0)
        if median > 0 and norm > ratio * median:
            return self._issue("exploding_gradients", step,
                               f"the gradient norm reached {norm:.4g}, {norm / median:.0f}x its recent median of {median:.4g}",
                               "keep gradient clipping on (--max-grad-norm 1.0) and lower --learning-rate",
                               grad_norm=norm, median_grad_norm=median, ratio_needed=ratio, trained_tokens=tokens)
        return None

    def _overfitting(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        k = self.settings.overfitting_evals
        train_now = self.train_loss_sum / self.train_loss_count if self.train_loss_count else float("nan")
        history = self.evaluations[-k:] + [{"step": step, "validation_loss": float(metrics["validation_loss"]), "train_loss": train_now}]
        if len(history) < k + 1:
            return None
        validation = [h["validation_loss"] for h in history]
        train = [h["train_loss"] for h in history]
        rising = all(b > a for a, b in zip(validation, validation[1:]))
        finite_train = [t for t in train if _finite(t)]
        falling = _finite(train[-1]) and len(finite_train) >= 2 and finite_train[-1] < finite_train[0]
        if rising and falling:
            return self._issue("overfitting", step,
                               f"validation loss rose for {k} evaluations in a row ({validation[0]:.4g} -> {validation[-1]:.4g}) "
                               f"while the training loss kept falling (to {train[-1]:.4g}): the model is memorising the training set",
                               "use the best checkpoint (the default --final-weights best), train fewer --epochs, turn on "
                               "--early-stopping, or add data; a lower --learning-rate or --lora-r also helps",
                               validation_loss=validation[-1], best_validation_loss=min(validation), train_loss=train[-1],
                               since_step=int(history[0]["step"]))
        return None

    def _plateau(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        s = self.settings
        if self.best_level is None or step - self.best_level_step < s.plateau_steps or step <= self.warmup_steps:
            return None
        learning_rate = metrics.get("learning_rate")
        if _finite(learning_rate) and learning_rate < s.plateau_min_lr_fraction * self.peak_learning_rate:
            return None  # a decayed schedule flattens the loss on purpose
        start = sum(self.first_losses) / len(self.first_losses) if self.first_losses else None
        if start is None or self.best_level > (1 - s.lr_low_improvement) * start:
            return None  # it never improved: that is lr_too_low's verdict, not a plateau
        waited = step - self.best_level_step
        return self._issue("plateau", step,
                           f"the training loss has not improved by 1% for {waited} steps "
                           f"(its 10-step average was {self.best_level:.4g} at step {self.best_level_step})",
                           "more steps at this setting won't help: stop here (--early-stopping), lower --learning-rate "
                           "to settle, or raise capacity (--lora-r) if the loss is still high",
                           best_average_loss=self.best_level, steps_without_improvement=waited)

    def _lr_too_high(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        s = self.settings
        if len(self.first_losses) < 3 or len(self.losses) < s.min_history:
            return None
        early = self.total_steps <= 0 or step <= max(s.window * 2, self.warmup_steps + s.window, self.total_steps // 3)
        if not early:
            return None
        untrained = self.first_losses[0]  # step 1's loss is measured before any update
        start = statistics.median(self.first_losses)
        loss = float(metrics["loss"])
        smoothed = statistics.median(list(self.losses)[-4:] + [loss])
        blowups = sum(1 for value in list(self.losses) + [loss] if value > 1.5 * untrained)
        if smoothed > s.lr_high_ratio * start or blowups >= 2:
            learning_rate = metrics.get("learning_rate")
            advice = f" (e.g. {float(learning_rate) / 5:.1e})" if _finite(learning_rate) else ""
            what = (f"the loss climbed to {smoothed:.4g}, above where it started ({start:.4g})" if smoothed > s.lr_high_ratio * start
                    else f"the loss jumped above 1.5x its untrained value ({untrained:.4g}) {blowups} times")
            return self._issue("lr_too_high", step, f"early in training {what}: the learning rate looks too high",
                               f"lower --learning-rate 3-10x{advice}, or use more --warmup-steps",
                               smoothed_loss=smoothed, start_loss=start, untrained_loss=untrained, blowups=blowups,
                               learning_rate=learning_rate)
        return None

    def _lr_too_low(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        s = self.settings
        if step < self.warmup_steps + s.lr_low_steps or len(self.first_losses) < 3 or len(self.losses) < 5:
            return None
        start = sum(self.first_losses) / len(self.first_losses)
        smoothed = statistics.median(list(self.losses)[-4:] + [float(metrics["loss"])])
        improvement = (start - smoothed) / max(abs(start), 1e-8)
        if -0.05 < improvement < s.lr_low_improvement:  # flat; a loss well above its start is lr_too_high's
            learning_rate = metrics.get("learning_rate")
            advice = f" (e.g. {float(learning_rate) * 5:.1e})" if _finite(learning_rate) else ""
            return self._issue("lr_too_low", step,
                               f"after {step} steps the loss ({smoothed:.4g}) has moved only {improvement:.1%} from where it "
                               f"started ({start:.4g}): the learning rate looks too low",
                               f"raise --learning-rate 3-10x{advice}",
                               smoothed_loss=smoothed, start_loss=start, learning_rate=learning_rate)
        return None

    def _throughput_drop(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        s = self.settings
        now = metrics.get("step_tokens_per_second")
        if not _finite(now) or len(self.throughputs) < s.min_history + 4:
            return None
        history = list(self.throughputs)
        recent = history[-4:] + [float(now)]  # five steps in a row: one slow step (a GC pause, a neighbour) is not a collapse
        baseline = statistics.median(history[1:-4])  # the first step pays one-off costs
        current = statistics.median(recent)
        if baseline > 0 and current < s.throughput_ratio * baseline:
            return self._issue("throughput_drop", step,
                               f"throughput fell to {current:.0f} tokens/s from a typical {baseline:.0f} "
                               f"({current / baseline:.0%})",
                               "something else is using the CPU/GPU, the machine is swapping (see memory) or throttling; "
                               "close other jobs or lower --batch-size",
                               tokens_per_second=current, typical_tokens_per_second=baseline)
        return None

    def _memory_creep(self, step: int, metrics: Mapping[str, Any]) -> Issue | None:
        s = self.settings
        now = metrics.get("gpu_memory_mb", metrics.get("memory_mb"))
        if not _finite(now) or self.memory_baseline is None:
            return None
        history = list(self.memory)
        recent = history[-(s.window - 1):] + [float(now)]
        rises = sum(1 for a, b in zip(recent, recent[1:]) if b > a)
        growth = float(now) - self.memory_baseline
        if growth > max(s.memory_growth_mb, s.memory_growth_ratio * self.memory_baseline) and rises >= 0.7 * (len(recent) - 1):
            return self._issue("memory_creep", step,
                               f"memory grew by {growth:.0f} MB to {now:.0f} MB and rose in {rises} of the last "
                               f"{len(recent) - 1} steps: something is holding on to memory",
                               "a callback or hook may keep tensors alive; lower --batch-size or --max-length if the run "
                               "nears the memory limit",
                               memory_mb=now, baseline_memory_mb=self.memory_baseline, growth_mb=growth)
        return None
