"""The training loop: one readable function, ``fit``.

Per optimizer step: the micro-batches of one accumulation group are summed with token-level
normalisation (every labelled token weighs the same, whatever batch it is in), gradients are
clipped, AdamW steps, the schedule advances. Metrics go to ``events.jsonl`` through the
``EventWriter``; evaluation and checkpoints follow the configured strategies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tuneforge.config import FineTuningConfig
from tuneforge.core.errors import TrainingError
from tuneforge.data.batching import collate, collate_packed, epoch_batches, iter_eval_batches, real_tokens
from tuneforge.data.tokenize import EncodedDataset
from tuneforge.model.loss import label_loss_sums, mean_label_loss, perplexity
from tuneforge.monitor.events import EventWriter
from tuneforge.train.checkpoint import save_checkpoint
from tuneforge.core.memory import current_memory_mb, peak_memory_mb
from tuneforge.train.optim import build_optimizer, build_scheduler, default_warmup, plan_steps


@dataclass
class TrainOutcome:
    """What training did, measured."""

    steps: int = 0
    epochs: float = 0.0
    train_seconds: float = 0.0  # wall time of the loop, evaluations and checkpoints included
    overhead_seconds: float = 0.0  # of which: evaluations and checkpoint writes
    trained_tokens: int = 0  # labelled tokens the loss was taken on, over all epochs
    processed_tokens: int = 0  # real (non-padding) tokens through the model
    tokens_per_second: float = 0.0  # processed_tokens / (train_seconds - overhead_seconds)
    final_train_loss: float | None = None
    best_validation_loss: float | None = None
    validation_history: list[dict[str, float]] = field(default_factory=list)
    peak_memory_mb: float = 0.0


def _to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}


def fit(
    model: Any,
    train_set: EncodedDataset,
    validation_set: EncodedDataset | None,
    config: FineTuningConfig,
    run_dir: Path,
    events: EventWriter,
    pad_token_id: int,
    save_weights: Callable[[Any, Path], None],
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> TrainOutcome:
    """Train ``model`` in place on ``train_set``; write step metrics, evaluations and checkpoints."""
    device = next(model.parameters()).device.type
    notify = on_event or (lambda event: None)
    lengths = [len(item.input_ids) for item in train_set.items]
    n_batches = math.ceil(len(lengths) / config.batch_size)
    accumulation = config.gradient_accumulation_steps
    steps_per_epoch, total_steps = plan_steps(n_batches, accumulation, config.epochs, config.max_steps)
    warmup = config.warmup_steps if config.warmup_steps is not None else default_warmup(total_steps)
    optimizer = build_optimizer(model, config.resolved_learning_rate, config.weight_decay)
    scheduler = build_scheduler(optimizer, config.lr_scheduler, warmup, total_steps)
    examples_total = round(len(lengths) * total_steps / steps_per_epoch)
    notify(events.emit("train.started", total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                       warmup_steps=warmup, examples=len(lengths), batch_size=config.batch_size,
                       gradient_accumulation_steps=accumulation))

    outcome = TrainOutcome()
    examples_seen = 0
    step = 0
    started = time.perf_counter()
    model.train()
    epoch = 0
    while step < total_steps:
        batches = epoch_batches(lengths, config.batch_size, config.seed, epoch)
        for group_start in range(0, len(batches), accumulation):
            if step >= total_steps:
                break
            group = batches[group_start : group_start + accumulation]
            items = [[train_set.items[i] for i in indices] for indices in group]
            group_tokens = sum(item.trained_tokens for batch in items for item in batch)
            loss_sum, correct = 0.0, 0
            for batch_items in items:
                batch = collate_packed(batch_items) if config.packing else collate(batch_items, pad_token_id)
                batch = _to_device(batch, device)
                sums = label_loss_sums(model, batch)
                (sums.loss_sum / group_tokens).backward()
                loss_sum += float(sums.loss_sum.detach())
                correct += sums.correct
                outcome.processed_tokens += real_tokens(batch)
            loss = loss_sum / group_tokens
            if not math.isfinite(loss):
                notify(events.emit("issue.detected", kind="nan_loss", severity="error", step=step + 1,
                                   message="the training loss is not a finite number",
                                   suggestion="lower --learning-rate, or check the data for empty or extreme examples"))
                raise TrainingError(f"training stopped at step {step + 1}: the loss became {loss}; lower --learning-rate and try again")
            grad_norm = _clip(model, config.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            examples_seen += sum(len(batch) for batch in items)
            outcome.trained_tokens += group_tokens
            outcome.final_train_loss = loss
            elapsed = time.perf_counter() - started - outcome.overhead_seconds
            progress = epoch + min(1.0, (group_start + len(group)) / len(batches))
            if step % config.logging_steps == 0 or step == total_steps:
                notify(events.emit(
                    "train.step", step=step, total_steps=total_steps, loss=loss, accuracy=correct / group_tokens,
                    perplexity=perplexity(loss), learning_rate=learning_rate, grad_norm=grad_norm,
                    epoch=round(progress, 4), examples={"processed": examples_seen, "total": examples_total},
                    tokens_per_second=outcome.processed_tokens / max(elapsed, 1e-9),
                    memory_mb=current_memory_mb(), elapsed_seconds=round(elapsed, 3),
                ))
            end_of_epoch = group_start + accumulation >= len(batches)
            pause = time.perf_counter()
            if validation_set and validation_set.items and _due(config.evaluation_strategy, config.eval_steps, step, end_of_epoch, total_steps):
                metrics = mean_label_loss(model, iter_eval_batches(validation_set.items, config.batch_size, pad_token_id))
                record = {"step": step, "epoch": round(progress, 4), "validation_loss": metrics["loss"],
                          "validation_accuracy": metrics["accuracy"], "validation_perplexity": metrics["perplexity"]}
                outcome.validation_history.append(record)
                best = outcome.best_validation_loss
                outcome.best_validation_loss = metrics["loss"] if best is None else min(best, metrics["loss"])
                notify(events.emit("eval.result", **record))
            if _due(config.saving_strategy, config.save_steps, step, end_of_epoch, total_steps) and step < total_steps:
                state = {"step": step, "epoch": epoch, "batches_done_in_epoch": group_start + len(group),
                         "examples_seen": examples_seen, "trained_tokens": outcome.trained_tokens}
                path = save_checkpoint(run_dir / "checkpoints", step, lambda out: save_weights(model, out),
                                       optimizer, scheduler, state, config.save_total_limit)
                notify(events.emit("checkpoint.saved", step=step, path=str(path.relative_to(run_dir))))
            outcome.overhead_seconds += time.perf_counter() - pause
        epoch += 1

    outcome.steps = step
    outcome.epochs = round(min(config.epochs, step / steps_per_epoch), 4)
    outcome.train_seconds = time.perf_counter() - started
    outcome.tokens_per_second = outcome.processed_tokens / max(outcome.train_seconds - outcome.overhead_seconds, 1e-9)
    outcome.peak_memory_mb = peak_memory_mb()
    return outcome


def _due(strategy: str, every: int, step: int, end_of_epoch: bool, total_steps: int) -> bool:
    """Whether an evaluation or save is due now under ``strategy``."""
    if strategy == "steps":
        return step % every == 0 or step == total_steps
    if strategy == "epoch":
        return end_of_epoch or step == total_steps
    return False


def _clip(model: Any, max_norm: float | None) -> float:
    parameters = [p for p in model.parameters() if p.grad is not None]
    if not parameters:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm else float("inf"))
    return float(norm)
