"""The training monitor's detectors: one function per issue kind, each judging a step's (or an evaluation's) metrics.

Each takes the ``MonitorHistory`` so far, the step and its metrics (a mapping of ``train.step`` /
``eval.result`` fields) and returns an ``Issue`` or None; none records anything. The table of kinds
and when each fires is in train/monitor.py's docstring; the thresholds are ``MonitorSettings``.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any, Callable, Mapping

from tuneforge.train.issues import Issue, make_issue
from tuneforge.train.monitor_stats import finite, sampling_noise, slope, step_tokens

if TYPE_CHECKING:
    from tuneforge.train.monitor_history import MonitorHistory

Detector = Callable[["MonitorHistory", int, Mapping[str, Any]], "Issue | None"]


def non_finite(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    loss, grad_norm = metrics.get("loss"), metrics.get("grad_norm")
    if not finite(loss):
        return make_issue("nan_loss", step, f"the training loss is {loss}, not a finite number",
                          "lower --learning-rate (try 3-10x lower), keep --max-grad-norm on, and check the data for "
                          "empty or extreme examples")
    if grad_norm is not None and not finite(grad_norm):
        return make_issue("nan_gradient", step, f"the gradient norm is {grad_norm} although the loss ({loss:.4g}) is finite",
                          "lower --learning-rate; if it persists, train in fp32 and look for extreme examples")
    return None


def loss_spike(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    s = history.settings
    if len(history.losses) < s.min_history:
        return None
    recent = list(history.losses)[-s.window:]
    counts = list(history.tokens)[-s.window:]
    median = statistics.median(recent)
    tokens = step_tokens(metrics)
    # Deviations rescaled to this step's token count: a step of fewer tokens is noisier by sqrt(n).
    spread = 1.4826 * statistics.median(abs(x - median) * (math.sqrt(n / tokens) if n and tokens else 1.0)
                                        for x, n in zip(recent, counts))
    noise = sampling_noise(median, tokens, history.token_loss(median))
    loss = float(metrics["loss"])
    z = (loss - median) / max(spread, noise, 0.01 * abs(median), 1e-8)
    if z > s.spike_z and loss > s.spike_ratio * median and loss - median > s.spike_min_rise:
        chance = f", {tokens:.0f} labelled tokens" if tokens else ""
        return make_issue("loss_spike", step,
                          f"the loss jumped to {loss:.4g}, {loss / median:.1f}x the recent median of {median:.4g} "
                          f"(robust z-score {z:.0f}{chance})",
                          "a single odd batch is harmless; repeated spikes mean the learning rate is too high: "
                          "lower --learning-rate or --max-grad-norm, or check this step's examples",
                          loss=loss, median=median, z_score=z, trained_tokens=tokens, chance_noise=noise)
    return None


def divergence(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    s = history.settings
    if len(history.losses) + 1 < s.window or history.best_smoothed is None:
        return None
    recent = list(history.losses)[-(s.window - 1):] + [float(metrics["loss"])]
    smoothed = statistics.median(recent[-5:])
    counts = list(history.tokens)[-4:] + [step_tokens(metrics)]  # the tokens behind ``smoothed``; 0 where unknown
    window_tokens = sum(counts) if all(counts) else 0.0
    noise = sampling_noise(smoothed, window_tokens, history.token_loss(smoothed))
    half = len(recent) // 2
    earlier, later = statistics.median(recent[:half]), statistics.median(recent[half:])
    trend = slope(recent)
    # Medians, not means: a single spike is loss_spike's business, a trend is this one's.
    # The best is the lowest of many noisy levels, the current one is noisy too: the rise must beat chance.
    rise = smoothed - history.best_smoothed
    rose = (smoothed > s.divergence_ratio * history.best_smoothed and rise > s.divergence_min_rise
            and rise > s.divergence_noise_z * noise)
    if rose and later > earlier * 1.1 and trend > 0:
        return make_issue("divergence", step,
                          f"the loss is rising: its recent average {smoothed:.4g} is {smoothed / history.best_smoothed:.1f}x "
                          f"the best it reached ({history.best_smoothed:.4g} at step {history.best_smoothed_step})",
                          "training is diverging: lower --learning-rate (3-10x), or roll back with "
                          "--on-issue divergence=rollback",
                          smoothed_loss=smoothed, best_smoothed_loss=history.best_smoothed, slope_per_step=trend,
                          chance_noise=noise,
                          since_step=history.best_smoothed_step)
    return None


def exploding_gradients(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    s = history.settings
    norm = metrics.get("grad_norm")
    if not finite(norm) or len(history.grad_norms) < s.min_history:
        return None
    median = statistics.median(list(history.grad_norms)[-s.window:])
    # One answer token the model gets badly wrong dominates the mean gradient of a step of few tokens
    # (batch 1 of one-word answers: 30x the median by chance); a fault is orders of magnitude.
    tokens = step_tokens(metrics)
    ratio = s.gradient_ratio * (max(1.0, math.sqrt(s.gradient_reference_tokens / tokens)) if tokens else 1.0)
    if median > 0 and norm > ratio * median:
        return make_issue("exploding_gradients", step,
                          f"the gradient norm reached {norm:.4g}, {norm / median:.0f}x its recent median of {median:.4g}",
                          "keep gradient clipping on (--max-grad-norm 1.0) and lower --learning-rate",
                          grad_norm=norm, median_grad_norm=median, ratio_needed=ratio, trained_tokens=tokens)
    return None


def overfitting(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    k = history.settings.overfitting_evals
    train_now = history.mean_train_loss()
    evaluations = history.evaluations[-k:] + [{"step": step, "validation_loss": float(metrics["validation_loss"]), "train_loss": train_now}]
    if len(evaluations) < k + 1:
        return None
    validation = [h["validation_loss"] for h in evaluations]
    train = [h["train_loss"] for h in evaluations]
    rising = all(b > a for a, b in zip(validation, validation[1:]))
    finite_train = [t for t in train if finite(t)]
    falling = finite(train[-1]) and len(finite_train) >= 2 and finite_train[-1] < finite_train[0]
    if rising and falling:
        return make_issue("overfitting", step,
                          f"validation loss rose for {k} evaluations in a row ({validation[0]:.4g} -> {validation[-1]:.4g}) "
                          f"while the training loss kept falling (to {train[-1]:.4g}): the model is memorising the training set",
                          "use the best checkpoint (the default --final-weights best), train fewer --epochs, turn on "
                          "--early-stopping, or add data; a lower --learning-rate or --lora-r also helps",
                          validation_loss=validation[-1], best_validation_loss=min(validation), train_loss=train[-1],
                          since_step=int(evaluations[0]["step"]))
    return None


def plateau(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    s = history.settings
    if history.best_level is None or step - history.best_level_step < s.plateau_steps or step <= history.warmup_steps:
        return None
    learning_rate = metrics.get("learning_rate")
    if finite(learning_rate) and learning_rate < s.plateau_min_lr_fraction * history.peak_learning_rate:
        return None  # a decayed schedule flattens the loss on purpose
    start = sum(history.first_losses) / len(history.first_losses) if history.first_losses else None
    if start is None or history.best_level > (1 - s.lr_low_improvement) * start:
        return None  # it never improved: that is lr_too_low's verdict, not a plateau
    waited = step - history.best_level_step
    return make_issue("plateau", step,
                      f"the training loss has not improved by 1% for {waited} steps "
                      f"(its 10-step average was {history.best_level:.4g} at step {history.best_level_step})",
                      "more steps at this setting won't help: stop here (--early-stopping), lower --learning-rate "
                      "to settle, or raise capacity (--lora-r) if the loss is still high",
                      best_average_loss=history.best_level, steps_without_improvement=waited)


def lr_too_high(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    s = history.settings
    if len(history.first_losses) < 3 or len(history.losses) < s.min_history:
        return None
    early = history.total_steps <= 0 or step <= max(s.window * 2, history.warmup_steps + s.window, history.total_steps // 3)
    if not early:
        return None
    untrained = history.first_losses[0]  # step 1's loss is measured before any update
    start = statistics.median(history.first_losses)
    loss = float(metrics["loss"])
    smoothed = statistics.median(list(history.losses)[-4:] + [loss])
    blowups = sum(1 for value in list(history.losses) + [loss] if value > 1.5 * untrained)
    if smoothed > s.lr_high_ratio * start or blowups >= 2:
        learning_rate = metrics.get("learning_rate")
        advice = f" (e.g. {float(learning_rate) / 5:.1e})" if finite(learning_rate) else ""
        what = (f"the loss climbed to {smoothed:.4g}, above where it started ({start:.4g})" if smoothed > s.lr_high_ratio * start
                else f"the loss jumped above 1.5x its untrained value ({untrained:.4g}) {blowups} times")
        return make_issue("lr_too_high", step, f"early in training {what}: the learning rate looks too high",
                          f"lower --learning-rate 3-10x{advice}, or use more --warmup-steps",
                          smoothed_loss=smoothed, start_loss=start, untrained_loss=untrained, blowups=blowups,
                          learning_rate=learning_rate)
    return None


def lr_too_low(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    s = history.settings
    if step < history.warmup_steps + s.lr_low_steps or len(history.first_losses) < 3 or len(history.losses) < 5:
        return None
    start = sum(history.first_losses) / len(history.first_losses)
    smoothed = statistics.median(list(history.losses)[-4:] + [float(metrics["loss"])])
    improvement = (start - smoothed) / max(abs(start), 1e-8)
    if -0.05 < improvement < s.lr_low_improvement:  # flat; a loss well above its start is lr_too_high's
        learning_rate = metrics.get("learning_rate")
        advice = f" (e.g. {float(learning_rate) * 5:.1e})" if finite(learning_rate) else ""
        return make_issue("lr_too_low", step,
                          f"after {step} steps the loss ({smoothed:.4g}) has moved only {improvement:.1%} from where it "
                          f"started ({start:.4g}): the learning rate looks too low",
                          f"raise --learning-rate 3-10x{advice}",
                          smoothed_loss=smoothed, start_loss=start, learning_rate=learning_rate)
    return None


def throughput_drop(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    s = history.settings
    now = metrics.get("step_tokens_per_second")
    if not finite(now) or len(history.throughputs) < s.min_history + 4:
        return None
    throughputs = list(history.throughputs)
    recent = throughputs[-4:] + [float(now)]  # five steps in a row: one slow step (a GC pause, a neighbour) is not a collapse
    baseline = statistics.median(throughputs[1:-4])  # the first step pays one-off costs
    current = statistics.median(recent)
    if baseline > 0 and current < s.throughput_ratio * baseline:
        return make_issue("throughput_drop", step,
                          f"throughput fell to {current:.0f} tokens/s from a typical {baseline:.0f} "
                          f"({current / baseline:.0%})",
                          "something else is using the CPU/GPU, the machine is swapping (see memory) or throttling; "
                          "close other jobs or lower --batch-size",
                          tokens_per_second=current, typical_tokens_per_second=baseline)
    return None


def memory_creep(history: MonitorHistory, step: int, metrics: Mapping[str, Any]) -> Issue | None:
    s = history.settings
    now = metrics.get("gpu_memory_mb", metrics.get("memory_mb"))
    if not finite(now) or history.memory_baseline is None:
        return None
    readings = list(history.memory)
    recent = readings[-(s.window - 1):] + [float(now)]
    rises = sum(1 for a, b in zip(recent, recent[1:]) if b > a)
    growth = float(now) - history.memory_baseline
    if growth > max(s.memory_growth_mb, s.memory_growth_ratio * history.memory_baseline) and rises >= 0.7 * (len(recent) - 1):
        return make_issue("memory_creep", step,
                          f"memory grew by {growth:.0f} MB to {now:.0f} MB and rose in {rises} of the last "
                          f"{len(recent) - 1} steps: something is holding on to memory",
                          "a callback or hook may keep tensors alive; lower --batch-size or --max-length if the run "
                          "nears the memory limit",
                          memory_mb=now, baseline_memory_mb=history.memory_baseline, growth_mb=growth)
    return None


# The step detectors, in the order their issues are reported (a non-finite step gets only ``non_finite``'s).
STEP_DETECTORS: tuple[Detector, ...] = (loss_spike, divergence, exploding_gradients, plateau, lr_too_high, lr_too_low,
                                        throughput_drop, memory_creep)
