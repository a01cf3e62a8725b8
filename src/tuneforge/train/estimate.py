"""How long training will take, measured on the code path training runs, before it runs.

``measure_training_speed`` times a few optimizer steps through the loop's own
``accumulate_gradients`` (packing or padding, micro-batch passes, the run's objective and fused
loss, its precision and method) plus an AdamW update, on the batches the first epoch starts
with. The first step warms up kernels and the allocator and is not timed. The model is left as it
was found: trainable weights, gradients, train/eval mode and the random-number generators are
restored, so a run that measures first trains exactly as one that does not.

``estimate_training`` turns that speed into the run's time (training steps plus its validation
evaluations, each measured), tokens and cost; ``finetune`` prints it before training and
``results.json`` keeps it beside the measured time (``train.estimate``).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch

from tuneforge.config import FineTuningConfig
from tuneforge.data.batching import epoch_batches, iter_eval_batches
from tuneforge.data.tokenize import EncodedDataset
from tuneforge.model.loss import mean_label_loss
from tuneforge.model.methods import get_method
from tuneforge.model.precision import forward_context, resolve_precision
from tuneforge.train.accumulation import accumulate_gradients
from tuneforge.train.objectives import run_loss_sums
from tuneforge.train.optim import build_optimizer, plan_steps

WARMUP_STEPS = 1  # untimed: the first pass pays for kernel selection and allocator growth
EVAL_BATCHES = 2  # validation batches timed for the evaluation part of the estimate


@dataclass
class SpeedSample:
    """Timed optimizer steps: tokens through the model per second of step time."""

    tokens_per_second: float | None
    steps: int
    seconds: float
    tokens: int


@dataclass
class TrainingEstimate:
    """The expected cost of a run, from measured speeds (``seconds`` = steps + evaluations)."""

    seconds: float | None
    step_seconds: float | None
    eval_seconds: float
    evaluations: int
    optimizer_steps: int
    tokens: int  # real tokens through the model in training, over all steps
    trained_tokens: int  # labelled tokens the loss is taken on, over all steps
    tokens_per_second: float | None
    measured_steps: int
    cost: float | None  # seconds / 3600 * cost_per_hour, when a price is given

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Preserved:
    """Restore the model's trainable weights, gradients, mode and RNG states on exit."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.weights = [(p, p.detach().clone()) for p in self.model.parameters() if p.requires_grad]
        self.training = self.model.training
        self.python_rng = random.getstate()
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for parameter, saved in self.weights:
                parameter.copy_(saved)
                parameter.grad = None
        self.model.train(self.training)
        random.setstate(self.python_rng)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_training_speed(model: Any, items: Sequence[Any], config: FineTuningConfig, pad_token_id: int,
                           steps: int = 2) -> SpeedSample:
    """Tokens/s of ``steps`` timed optimizer steps (after one warm-up) of ``model`` on ``items``, as ``fit`` runs them.

    ``items`` are encoded examples; batches are drawn the way the first epoch orders them
    (``config.batch_size`` x ``gradient_accumulation_steps`` per step, cycling when there are
    few). The model is unchanged afterwards.
    """
    if not items or steps < 1:
        return SpeedSample(None, 0, 0.0, 0)
    device = next(model.parameters()).device.type
    precision = resolve_precision(config.precision, device)
    loss_sums = run_loss_sums(config)
    lengths = [len(item.input_ids) for item in items]
    batches = epoch_batches(lengths, config.batch_size, config.seed, 0)
    accumulation = config.gradient_accumulation_steps
    timed_seconds, timed_tokens = 0.0, 0
    with _Preserved(model):
        optimizer = build_optimizer(model, config.resolved_learning_rate, config.weight_decay)
        model.train()
        for step in range(WARMUP_STEPS + steps):
            group = [[items[i] for i in batches[(step * accumulation + k) % len(batches)]] for k in range(accumulation)]
            _synchronize(device)
            started = time.perf_counter()
            sums = accumulate_gradients(model, group, config, loss_sums, precision, pad_token_id, device)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _synchronize(device)
            if step >= WARMUP_STEPS:
                timed_seconds += time.perf_counter() - started
                timed_tokens += sums.processed_tokens
        del optimizer
    speed = timed_tokens / timed_seconds if timed_seconds > 0 else None
    return SpeedSample(round(speed, 1) if speed else None, steps, round(timed_seconds, 3), timed_tokens)


def measure_evaluation_speed(model: Any, items: Sequence[Any], config: FineTuningConfig, pad_token_id: int) -> float | None:
    """Tokens/s of the validation loss (forward only) on the first ``EVAL_BATCHES`` batches, as ``fit`` evaluates."""
    if not items:
        return None
    device = next(model.parameters()).device.type
    loss_sums = run_loss_sums(config)
    sample = list(items[: config.batch_size * (EVAL_BATCHES + 1)])
    batches = list(iter_eval_batches(sample, config.batch_size, pad_token_id))
    with _Preserved(model):  # as fit evaluates: no autocast, the weights' own dtype
        mean_label_loss(model, batches[:1], loss_sums)  # warm-up
        _synchronize(device)
        started = time.perf_counter()
        mean_label_loss(model, batches[1:] or batches, loss_sums)
        _synchronize(device)
        seconds = time.perf_counter() - started
    tokens = sum(int(batch["attention_mask"].sum()) for batch in (batches[1:] or batches))
    return tokens / seconds if seconds > 0 else None


def evaluations_planned(config: FineTuningConfig, total_steps: int, steps_per_epoch: int) -> int:
    """How many validation evaluations ``fit`` will run (as ``cadence.is_due`` schedules them)."""
    if config.evaluation_strategy == "steps":
        return total_steps // config.eval_steps + (1 if total_steps % config.eval_steps else 0)
    if config.evaluation_strategy == "epoch":
        return math.ceil(total_steps / steps_per_epoch)
    return 0


def estimate_training(model: Any, train_set: EncodedDataset, validation_set: EncodedDataset | None,
                      config: FineTuningConfig, pad_token_id: int, steps: int = 2,
                      measure: Callable[..., SpeedSample] = measure_training_speed) -> TrainingEstimate:
    """The run's expected time, tokens and cost, measured on ``model`` (left unchanged) before ``fit``."""
    config = config.concrete()
    items = train_set.items
    n_batches = math.ceil(len(items) / config.batch_size)
    steps_per_epoch, total_steps = plan_steps(n_batches, config.gradient_accumulation_steps, config.epochs, config.max_steps)
    share = total_steps / steps_per_epoch  # epochs' worth of data the plan goes through
    tokens = round(sum(len(item.input_ids) for item in items) * share)
    trained = round(train_set.trained_tokens * share)
    sample = measure(model, items, config, pad_token_id, steps=steps)
    step_seconds = tokens / sample.tokens_per_second if sample.tokens_per_second else None
    evaluations = evaluations_planned(config, total_steps, steps_per_epoch) if validation_set and validation_set.items else 0
    eval_seconds = 0.0
    if evaluations:
        speed = measure_evaluation_speed(model, validation_set.items, config, pad_token_id)
        validation_tokens = sum(len(item.input_ids) for item in validation_set.items)
        eval_seconds = evaluations * validation_tokens / speed if speed else 0.0
    seconds = step_seconds + eval_seconds if step_seconds is not None else None
    cost = seconds / 3600 * config.cost_per_hour if seconds is not None and config.cost_per_hour else None
    return TrainingEstimate(
        seconds=round(seconds, 1) if seconds is not None else None,
        step_seconds=round(step_seconds, 1) if step_seconds is not None else None,
        eval_seconds=round(eval_seconds, 1), evaluations=evaluations, optimizer_steps=total_steps, tokens=tokens,
        trained_tokens=trained, tokens_per_second=sample.tokens_per_second, measured_steps=sample.steps,
        cost=round(cost, 4) if cost is not None else None,
    )


def training_speed_probe(model_dir: Any, config: FineTuningConfig, pad_token_id: int,
                         steps: int = 2) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A probe for the data doctor's estimate: the base loaded and made trainable as ``config`` trains it.

    The returned ``probe(items)`` times ``steps`` optimizer steps on encoded examples and returns
    ``{"tokens_per_second", "steps"}``; the model it loads is its own, thrown away with it.
    """
    from tuneforge.model.load import pick_device
    from tuneforge.model.methods import make_trainable

    device = pick_device()
    method = get_method(config.method)
    torch.manual_seed(config.seed)
    model = make_trainable(method, method.load_base(model_dir, device, config, resolve_precision(config.precision, device)), config)

    def probe(items: Sequence[Any]) -> dict[str, Any]:
        sample = measure_training_speed(model, items, config, pad_token_id, steps=steps)
        return {"tokens_per_second": sample.tokens_per_second, "steps": sample.steps}

    return probe
