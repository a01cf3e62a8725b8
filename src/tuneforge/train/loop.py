"""The training loop: ``fit``, one readable sequence of optimizer steps, watched by a ``TrainingMonitor``.

Per optimizer step: the micro-batches of one accumulation group are summed with token-level
normalisation (every labelled token weighs the same, whatever batch it is in), a non-finite loss or
gradient is caught before the update, gradients are clipped, AdamW steps, the schedule advances.
Metrics go to ``events.jsonl``; the monitor's issues are handled by the run's policy (warn, stop,
roll back to the last healthy checkpoint with a lower learning rate). Evaluations track the best
checkpoint and drive early stopping. A run resumed from a checkpoint continues exactly: weights,
optimizer, schedule, RNG states and the data position are restored.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tuneforge.config import FineTuningConfig
from tuneforge.core.errors import CheckpointError, TrainingError
from tuneforge.core.memory import current_memory_mb, peak_memory_mb
from tuneforge.core.status import INTERRUPTED
from tuneforge.data.batching import collate, collate_packed, epoch_batches, iter_eval_batches, real_tokens, split_into_passes
from tuneforge.data.tokenize import EncodedDataset
from tuneforge.model.loss import LossSums, add_metric_sums, mean_label_loss, perplexity
from tuneforge.model.methods import get_method
from tuneforge.model.precision import forward_context, resolve_precision
from tuneforge.monitor.events import EventWriter
from tuneforge.train.checkpoint import (
    checkpoint_name,
    checkpoint_step,
    load_state_file,
    load_weights,
    newest_valid_checkpoint,
    read_trainer_state,
    remove_checkpoints_after,
    remove_stale_staging,
    rng_state,
    save_checkpoint,
    set_rng_state,
    verify_checkpoint,
)
from tuneforge.train import distributed, fsdp
from tuneforge.train.distributed import current_world, rng_file, shard_group
from tuneforge.train.monitor import Issue, MonitorSettings, TrainingMonitor
from tuneforge.train.objectives import run_loss_sums
from tuneforge.train.optim import build_optimizer, build_scheduler, default_warmup, plan_steps
from tuneforge.train.signals import GracefulStop
from tuneforge.train.state import TrainState, data_fingerprint

# best_metric values where higher is better; the others are losses.
HIGHER_IS_BETTER = {"validation_accuracy"}


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
    best_metric: str | None = None  # the metric that picked the best checkpoint
    best_metric_value: float | None = None
    best_step: int | None = None
    final_weights_step: int = 0  # the step whose weights the model holds at the end (best or last)
    stopped_early: dict[str, Any] | None = None  # {"step", "reason"} when training ended before its plan
    interrupted: str | None = None  # why training stopped at a step boundary: the signal's name or the request's reason
    checkpoint: str | None = None  # the newest checkpoint, relative to the run directory
    resumed_from_step: int | None = None
    rollbacks: int = 0
    skipped_steps: int = 0


def training_loss_sums(loss_sums: Callable[[Any, dict[str, Any]], LossSums], model: Any, batch: dict[str, Any]) -> LossSums:
    """The loss sums of one training pass, as the run's objective computes them.

    The loop's only loss call, kept module-level so that tests inject faults (NaN, spikes,
    exploding gradients) in one place whatever the objective.
    """
    return loss_sums(model, batch)


@dataclass
class GroupSums:
    """What the forward/backward passes of one accumulation group added up to."""

    loss_sum: float  # summed loss over the group's labelled tokens
    correct: int  # labelled tokens predicted right
    trained_tokens: int  # labelled tokens (the loss is divided by this)
    processed_tokens: int  # real, non-padding tokens through the model
    metrics: dict[str, float] = field(default_factory=dict)  # the objective's metric sums (LossSums.metrics)


def accumulate_gradients(model: Any, group: list[list[Any]], config: FineTuningConfig,
                         loss_sums: Callable[[Any, dict[str, Any]], LossSums], precision: str, pad_token_id: int,
                         device: str, total_tokens: int | None = None, filler: list[Any] | None = None) -> GroupSums:
    """Forward and backward over one accumulation group (``group``: batches of encoded examples).

    The batches are packed or padded as the config says and split into passes of at most
    ``micro_batch_tokens``; gradients are accumulated with token-level normalisation, so they equal
    one pass over the whole group. This is the whole per-step compute of training, shared with the
    training-time estimate (train/estimate.py) so that it measures exactly what training runs.
    ``total_tokens`` is what the summed loss is divided by: the labelled tokens of the global group
    when this process trains only its share of it (train/distributed.py); default: ``group``'s own.
    ``filler`` (FSDP, where every pass is a collective): this process adds zero-weight passes over
    these items until it has made as many passes as the busiest process.
    """
    trained_tokens = total_tokens if total_tokens is not None else sum(item.trained_tokens for batch in group for item in batch)
    loss_sum, correct, processed = 0.0, 0, 0
    metrics: dict[str, float] = {}
    passes = [part for batch in group for part in split_into_passes(batch, config.micro_batch_tokens, config.packing)]
    if filler is not None:
        passes += [None] * fsdp.filler_passes(len(passes))
    for batch_items in passes:
        filling = batch_items is None
        batch = collate_packed(batch_items or filler) if config.packing else collate(batch_items or filler, pad_token_id)
        batch = _to_device(batch, device)
        with forward_context(model, precision):
            sums = training_loss_sums(loss_sums, model, batch)
        if filling:  # the collectives of a pass, nothing of its loss
            (sums.loss_sum * 0.0).backward()
            continue
        (sums.loss_sum / trained_tokens).backward()
        loss_sum += float(sums.loss_sum.detach())
        correct += sums.correct
        processed += real_tokens(batch)
        add_metric_sums(metrics, sums.metrics)
    return GroupSums(loss_sum, correct, trained_tokens, processed, metrics)


def _metric_sums_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """An objective's metric sums added over every process (a process with an empty share has none)."""
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, metrics)
    total: dict[str, float] = {}
    for part in parts:
        add_metric_sums(total, part or {})
    return total


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
    stop: GracefulStop | None = None,
    monitor_settings: MonitorSettings | None = None,
) -> TrainOutcome:
    """Train ``model`` in place on ``train_set``; write step metrics, evaluations, issues and checkpoints.

    With ``config.resume`` the newest intact checkpoint in ``run_dir/checkpoints`` is restored first
    (corrupt ones are skipped with a ``checkpoint.skipped`` event); without one, training starts over.

    Raises:
        TrainingError: the loss or gradients became non-finite under the ``stop`` policy.
        CheckpointError: a checkpoint could not be written or does not belong to this run.
    """
    config = config.concrete()  # no auto left (the pipeline resolves them; a direct caller gets the fixed fallbacks)
    run = _Run(model, train_set, validation_set, config, run_dir, events, pad_token_id, save_weights,
               on_event or (lambda event: None), monitor_settings)
    rng = run.start()
    with stop.deferring() if stop else nullcontext():
        if rng is not None:
            set_rng_state(rng)  # last, right before the first step: nothing may draw from the generators in between
        ending = run.train(stop)
        if ending == INTERRUPTED and stop is not None:
            run.save_interrupted(stop)
    if ending != INTERRUPTED:
        run.select_final_weights()
    return run.finish()


class _Run:
    """The state of one call of ``fit``: model, optimizer, schedule, monitor and position."""

    def __init__(self, model: Any, train_set: EncodedDataset, validation_set: EncodedDataset | None,
                 config: FineTuningConfig, run_dir: Path, events: EventWriter, pad_token_id: int,
                 save_weights: Callable[[Any, Path], None], notify: Callable[[dict[str, Any]], None],
                 monitor_settings: MonitorSettings | None) -> None:
        self.model, self.train_set, self.validation_set, self.config = model, train_set, validation_set, config
        self.run_dir, self.events, self.pad_token_id, self.notify = run_dir, events, pad_token_id, notify
        self.save_weights = save_weights
        self.checkpoints_dir = run_dir / "checkpoints"
        self.world = current_world()  # several processes: each trains its share of every step, rank 0 writes
        self.process_ids = [os.getpid()]  # by rank
        self.device = next(model.parameters()).device.type
        self.precision = resolve_precision(config.precision, self.device)
        # The objective computes the loss; the method says whether it must run the wrapper's forward.
        self.loss_sums = run_loss_sums(config)
        # FSDP: the loop trains a sharded model; rank 0 keeps ``model`` whole (``plain``) to save and hand back.
        self.fsdp = config.distributed == "fsdp" and self.world.active
        self.plain: Any = None
        if self.fsdp:
            self.plain, self.parked_device = (model if self.world.is_main else None), next(model.parameters()).device
            self.model = fsdp.copy_to_shard(model, self.world.is_main)
            self.loss_sums = fsdp.sharded_loss_sums(fsdp.shard(self.model, self.loss_sums))
            model = self.model
        self.lengths = [len(item.input_ids) for item in train_set.items]
        self.n_batches = math.ceil(len(self.lengths) / config.batch_size)
        self.accumulation = config.gradient_accumulation_steps
        self.steps_per_epoch, self.total_steps = plan_steps(self.n_batches, self.accumulation, config.epochs, config.max_steps)
        self.warmup = config.warmup_steps if config.warmup_steps is not None else default_warmup(self.total_steps)
        self.optimizer = build_optimizer(model, config.resolved_learning_rate, config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config.lr_scheduler, self.warmup, self.total_steps)
        self.monitor = TrainingMonitor(monitor_settings, self.warmup, self.total_steps)
        self.actions = config.issue_actions
        self.state = TrainState(total_steps=self.total_steps, data_fingerprint=data_fingerprint(
            [(item.input_ids, item.labels) for item in train_set.items]))
        self.outcome = TrainOutcome()
        self.last_saved_step: int | None = None
        self.clock_start = 0.0
        self._batches: tuple[int, list[list[int]]] | None = None

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = self.events.emit(type_, **fields)
        self.notify(event)
        return event

    # ------------------------------------------------------------------ start, resume, finish

    def start(self) -> dict[str, Any] | None:
        """Clean up after a killed save, resume if asked; return the RNG state to restore (None: fresh start)."""
        for stale in remove_stale_staging(self.checkpoints_dir) if self.world.is_main else []:
            self.emit("checkpoint.cleaned", path=str(stale.relative_to(self.run_dir)),
                      message="removed a checkpoint that was still being written when the run stopped")
        rng = None
        if self.config.resume:
            path, skipped = newest_valid_checkpoint(self.checkpoints_dir)
            for bad in skipped:
                self.emit("checkpoint.skipped", path=str(bad.path.relative_to(self.run_dir)), problems=bad.problems,
                          message=f"skipped corrupt checkpoint {bad.path.name}: {bad.problems[0]}")
            if path is not None:
                rng = self.restore(path)
                self.outcome.resumed_from_step = self.state.step
                self.last_saved_step = self.state.step
            self.emit("train.resumed", step=self.state.step, checkpoint=str(path.relative_to(self.run_dir)) if path else None,
                      message=f"resuming from {path.name}" if path else "no intact checkpoint: starting from the beginning")
        if self.world.active:
            plans = distributed.gather_objects((self.state.data_fingerprint, _trajectory_settings(self.config)))
            if len(set(plans)) > 1:
                raise TrainingError(f"the processes of this run would train differently (data fingerprint, settings hash "
                                    f"by rank: {plans}); every process must tokenize the same splits with the same "
                                    "tokenizer and settings")
            if not self.fsdp:  # (fsdp.shard broadcast them before sharding)
                distributed.broadcast_parameters(self.model)  # every process starts from rank 0's trainable weights, as DDP does
            self.process_ids = distributed.gather_objects(os.getpid())
        self.emit("train.started", total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                  warmup_steps=self.warmup, examples=len(self.lengths), batch_size=self.config.batch_size,
                  gradient_accumulation_steps=self.accumulation, start_step=self.state.step, processes=self.world.size,
                  process_ids=self.process_ids, distributed=self.config.distributed if self.world.active else None)
        self.clock_start = time.perf_counter() - self.state.train_seconds
        return rng

    def load_weights(self, weights_dir: Path) -> None:
        """Checkpoint weights back into the model: the method's own loader, else the generic one.

        FSDP: rank 0 loads them into its whole model, and every shard is filled from it."""
        if self.fsdp:
            if self.world.is_main:
                self._load_plain_weights(self.plain, weights_dir)
            fsdp.load_full_weights(self.model, self.plain.state_dict() if self.world.is_main else None)
            return
        self._load_plain_weights(self.model, weights_dir)

    def _load_plain_weights(self, model: Any, weights_dir: Path) -> None:
        if not get_method(self.config.method).load_weights(model, weights_dir):
            load_weights(model, weights_dir)

    def restore(self, path: Path) -> dict[str, Any]:
        """Load weights, optimizer, schedule, trainer and monitor state from checkpoint ``path``; return its RNG state."""
        saved = TrainState.from_dict(read_trainer_state(path))
        if saved.total_steps and saved.total_steps != self.total_steps:
            raise CheckpointError(f"{path} was written by a run of {saved.total_steps} steps, this one plans {self.total_steps}; "
                                  "resume with the run's own settings (tuneforge resume RUN_DIR)")
        if saved.data_fingerprint and saved.data_fingerprint != self.state.data_fingerprint:
            raise CheckpointError(f"{path} was trained on other data than the data given now; resume needs the same "
                                  "data files (and the same --seed, --max-length and splits)")
        self.load_weights(path / "weights")
        if self.fsdp:
            fsdp.load_full_optimizer(self.model, self.optimizer,
                                     load_state_file(path / "optimizer.pt") if self.world.is_main else None)
        else:
            self.optimizer.load_state_dict(load_state_file(path / "optimizer.pt"))
        self.scheduler.load_state_dict(load_state_file(path / "scheduler.pt"))
        own = path / rng_file(self.world.rank)  # each process continues its own generators
        rng = load_state_file(own if own.is_file() else path / rng_file(0))
        self.state = saved
        self.monitor.load_state_dict(saved.monitor)
        return rng

    def finish(self) -> TrainOutcome:
        outcome, state = self.outcome, self.state
        if self.fsdp:  # the caller's model (rank 0's whole one) gets the trained weights, as without FSDP
            weights, _ = fsdp.gather_full_state(self.model)
            if self.world.is_main:
                fsdp.into_plain(self.plain, weights)
                fsdp.unpark(self.plain, self.parked_device)
        outcome.steps = state.step
        outcome.epochs = round(min(self.config.epochs, state.step / self.steps_per_epoch), 4)
        outcome.train_seconds = time.perf_counter() - self.clock_start
        outcome.overhead_seconds = state.overhead_seconds
        outcome.trained_tokens, outcome.processed_tokens = state.trained_tokens, state.processed_tokens
        outcome.tokens_per_second = state.processed_tokens / max(outcome.train_seconds - state.overhead_seconds, 1e-9)
        outcome.final_train_loss = state.final_train_loss
        outcome.validation_history = state.validation_history
        losses = [record["validation_loss"] for record in state.validation_history]
        outcome.best_validation_loss = min(losses) if losses else None
        if state.best_step is not None:
            outcome.best_metric, outcome.best_metric_value, outcome.best_step = self.config.best_metric, state.best_value, state.best_step
        if not outcome.final_weights_step:
            outcome.final_weights_step = state.step
        outcome.rollbacks, outcome.skipped_steps = state.rollbacks, state.skipped_steps
        outcome.peak_memory_mb = peak_memory_mb()
        return outcome

    # ------------------------------------------------------------------ the loop

    def train(self, stop: GracefulStop | None) -> str:
        """Run optimizer steps until the plan is done; return why it ended: done, stopped or interrupted."""
        state, config = self.state, self.config
        self.model.train()
        while state.step < self.total_steps:
            if self.stop_requested(stop):
                return INTERRUPTED
            batches = self.epoch_order(state.epoch)
            if state.batches_done_in_epoch >= len(batches):
                state.epoch, state.batches_done_in_epoch = state.epoch + 1, 0
                continue
            group = batches[state.batches_done_in_epoch : state.batches_done_in_epoch + self.accumulation]
            try:
                issues = self.optimizer_step(group)
            except _RolledBack:
                state = self.state
                continue
            end_of_epoch = state.batches_done_in_epoch >= len(batches)
            pause = time.perf_counter()
            ended_by = None
            if self.validation_set and self.validation_set.items and _due(
                config.evaluation_strategy, config.eval_steps, state.step, end_of_epoch, self.total_steps
            ):
                eval_issues, ended_by = self.evaluate(len(batches))
                issues += eval_issues
            decision = self.handle(issues)
            if decision == "rollback":
                state = self.state
                state.overhead_seconds += time.perf_counter() - pause
                continue
            ended_by = ended_by or decision
            saving_due = _due(config.saving_strategy, config.save_steps, state.step, end_of_epoch, self.total_steps)
            best_now = config.final_weights == "best" and state.best_step == state.step
            if (saving_due or best_now) and state.step < self.total_steps and ended_by is None:
                self.save()
            state.overhead_seconds += time.perf_counter() - pause
            if ended_by is not None:
                self.outcome.stopped_early = {"step": state.step, "reason": ended_by}
                return "stopped"
        if self.stop_requested(stop):
            return INTERRUPTED
        return "done"

    def stop_requested(self, stop: GracefulStop | None) -> bool:
        """Whether to stop at this step boundary; with several processes, whether any of them was asked to."""
        asked = stop is not None and stop.requested
        if not self.world.active:
            return asked
        agreed = distributed.any_rank(asked)
        if agreed and stop is not None and not asked:
            stop.request("another process of the run was asked to stop")
        return agreed

    def epoch_order(self, epoch: int) -> list[list[int]]:
        if self._batches is None or self._batches[0] != epoch:
            self._batches = (epoch, epoch_batches(self.lengths, self.config.batch_size, self.config.seed, epoch))
        return self._batches[1]

    def optimizer_step(self, group: list[list[int]]) -> list[Issue]:
        """Forward, backward, checks, update for one accumulation group; return the monitor's issues."""
        state, config = self.state, self.config
        started = time.perf_counter()
        # With several processes this one trains its share of the group, divided by the whole group's tokens.
        group_tokens = sum(self.train_set.items[i].trained_tokens for indices in group for i in indices)
        items = [[self.train_set.items[i] for i in indices] for indices in shard_group(group, self.world)]
        filler = [self.train_set.items[group[0][0]]] if self.fsdp else None
        sums = accumulate_gradients(self.model, items, config, self.loss_sums, self.precision, self.pad_token_id,
                                    self.device, total_tokens=group_tokens, filler=filler)
        loss_sum, correct, processed = sums.loss_sum, sums.correct, sums.processed_tokens
        if self.world.active:
            if not self.fsdp:  # (FSDP reduce-scatters them in the backward passes)
                distributed.all_reduce_gradients(self.model)
            loss_sum, correct, processed = distributed.sum_over_ranks([loss_sum, correct, processed])
            correct, processed = int(correct), int(processed)
            sums.metrics = _metric_sums_over_ranks(sums.metrics)
        loss = loss_sum / group_tokens
        grad_norm = _clip(self.model, config.max_grad_norm)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        step = state.step + 1
        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if skipped:  # never apply a non-finite update; the policy decides whether the run goes on
            self.optimizer.zero_grad(set_to_none=True)
            issue = self.monitor.detect_issues({"step": step, "loss": loss, "grad_norm": grad_norm})[0]
            self.on_non_finite(issue, bool(self.monitor.report([issue])), loss, grad_norm)
            state.skipped_steps += 1
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        state.step = step
        state.batches_done_in_epoch += len(group)
        state.examples_seen += sum(len(batch) for batch in group)
        state.trained_tokens += group_tokens
        state.processed_tokens += processed
        state.final_train_loss = loss
        step_seconds = time.perf_counter() - started
        elapsed = time.perf_counter() - self.clock_start - state.overhead_seconds
        state.train_seconds = time.perf_counter() - self.clock_start
        memory = current_memory_mb()
        if self.world.active:  # the slowest, largest process's: every process's monitor must see the same metrics
            step_seconds, elapsed, memory = distributed.max_over_ranks([step_seconds, elapsed, memory])
        batches = self.epoch_order(state.epoch)
        metrics: dict[str, Any] = {
            "step": step, "total_steps": self.total_steps, "loss": loss, "accuracy": correct / group_tokens,
            "perplexity": perplexity(loss) if math.isfinite(loss) else float("nan"), "learning_rate": learning_rate,
            "grad_norm": grad_norm, "epoch": round(state.epoch + min(1.0, state.batches_done_in_epoch / len(batches)), 4),
            "examples": {"processed": state.examples_seen, "total": round(len(self.lengths) * self.total_steps / self.steps_per_epoch)},
            "tokens_per_second": state.processed_tokens / max(elapsed, 1e-9),
            "step_tokens_per_second": processed / max(step_seconds, 1e-9),
            "memory_mb": memory, "elapsed_seconds": round(elapsed, 3),
            "trained_tokens": group_tokens,  # the loss is a mean over these: the monitor allows for its noise
        }
        # The objective's own figures (DPO's rewards, a user loss's terms): means over the step's units.
        metrics.update({name: value / group_tokens for name, value in sums.metrics.items() if name not in metrics})
        if self.device == "cuda":
            metrics["gpu_memory_mb"] = round(torch.cuda.memory_allocated() / 1e6, 1)
        if skipped:
            metrics["skipped"] = True
        if step % config.logging_steps == 0 or step == self.total_steps or skipped:
            self.emit("train.step", **metrics)
        return [] if skipped else self.monitor.track_metrics(metrics)

    def on_non_finite(self, issue: Issue, fresh: bool, loss: float, grad_norm: float) -> None:
        """Apply the policy for a non-finite loss or gradient (the update was not applied)."""
        action = self.actions.get(issue.kind, "stop")
        issue.action = "warn" if action == "ignore" else action
        if action in ("stop", "rollback") or (fresh and action == "warn"):
            self.emit("issue.detected", **issue.to_dict())
        if action == "rollback" and self.rollback(issue):
            raise _RolledBack()
        if action in ("stop", "rollback"):
            newest = newest_valid_checkpoint(self.checkpoints_dir)[0]
            kept = f"; the last good checkpoint is {newest.name}" if newest else ""
            what = f"the loss became {loss}" if not math.isfinite(loss) else f"the gradient norm became {grad_norm}"
            raise TrainingError(f"training stopped at step {issue.step}: {what}{kept}; lower --learning-rate and try again")

    def evaluate(self, n_batches: int) -> tuple[list[Issue], str | None]:
        """Validation loss; track the best checkpoint; early stopping. Returns (issues, reason to stop or None)."""
        state, config = self.state, self.config
        metrics = mean_label_loss(self.model, iter_eval_batches(self.validation_set.items, config.batch_size, self.pad_token_id),
                                  self.loss_sums)
        record = {"step": state.step, "epoch": round(state.epoch + min(1.0, state.batches_done_in_epoch / n_batches), 4),
                  "validation_loss": metrics["loss"], "validation_accuracy": metrics["accuracy"],
                  "validation_perplexity": metrics["perplexity"],
                  **{f"validation_{name}": value for name, value in metrics.items() if name not in ("loss", "accuracy", "perplexity")}}
        state.validation_history.append(record)
        value = record[config.best_metric]
        sign = -1.0 if config.best_metric in HIGHER_IS_BETTER else 1.0
        previous = state.best_value
        if previous is None or sign * value < sign * previous:
            state.best_value, state.best_step = value, state.step
        if previous is None or sign * (previous - value) > config.early_stopping_min_delta:
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1
        self.emit("eval.result", **record, best_step=state.best_step, best_value=state.best_value,
                  evals_without_improvement=state.evals_without_improvement)
        issues = self.monitor.track_metrics(record)
        if config.early_stopping and state.evals_without_improvement >= config.early_stopping_patience:
            self.emit("train.early_stopped", step=state.step, metric=config.best_metric, best_value=state.best_value,
                      best_step=state.best_step, patience=config.early_stopping_patience,
                      message=f"{config.best_metric} has not improved by more than {config.early_stopping_min_delta} for "
                              f"{state.evals_without_improvement} evaluations; the best was {state.best_value:.4g} at step {state.best_step}")
            return issues, "early_stopping"
        return issues, None

    # ------------------------------------------------------------------ issue policies

    def handle(self, issues: list[Issue]) -> str | None:
        """Report ``issues`` and apply their policies. Returns "rollback", a reason to stop, or None."""
        decision: str | None = None
        for issue in issues:
            action = self.actions.get(issue.kind, "warn")
            if action == "ignore":
                continue
            if action == "rollback" and decision is None:
                issue.action = "rollback"
                self.emit("issue.detected", **issue.to_dict())
                if self.rollback(issue):
                    return "rollback"
                decision = issue.kind  # nothing to roll back to: stop instead
                continue
            issue.action = action
            self.emit("issue.detected", **issue.to_dict())
            if action == "stop" and decision is None:
                decision = issue.kind
        return decision

    def rollback(self, issue: Issue) -> bool:
        """Go back to the newest intact checkpoint from before ``issue`` began, with a lower learning rate."""
        state, config = self.state, self.config
        if state.rollbacks >= config.max_rollbacks:
            self.emit("train.rollback_refused", step=issue.step, reason=issue.kind,
                      message=f"already rolled back {state.rollbacks} times (--max-rollbacks); stopping instead")
            return False
        limit = issue.since_step if issue.since_step is not None else issue.step - 1
        path, _ = newest_valid_checkpoint(self.checkpoints_dir, before_step=limit + 1)
        if path is None:
            self.emit("train.rollback_refused", step=issue.step, reason=issue.kind,
                      message=f"no intact checkpoint from step {limit} or before to roll back to; stopping instead "
                              "(a smaller --save-steps leaves more points to roll back to)")
            return False
        scale, rollbacks, skipped = state.lr_scale * config.rollback_lr_factor, state.rollbacks + 1, state.skipped_steps
        rng = self.restore(path)
        ratio = scale / self.state.lr_scale
        self.scheduler.base_lrs = [lr * ratio for lr in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
        self.state.lr_scale, self.state.rollbacks, self.state.skipped_steps = scale, rollbacks, skipped
        if self.world.is_main:
            remove_checkpoints_after(self.checkpoints_dir, self.state.step)
        if self.world.active:
            distributed.barrier()
        self.last_saved_step = self.state.step
        set_rng_state(rng)
        self.emit("train.rollback", from_step=issue.step, to_step=self.state.step, reason=issue.kind,
                  learning_rate_scale=scale, checkpoint=str(path.relative_to(self.run_dir)),
                  message=f"rolled back from step {issue.step} to {path.name} after {issue.kind}; "
                          f"learning rate now x{scale:g}")
        return True

    # ------------------------------------------------------------------ checkpoints and the final weights

    def save(self) -> Path:
        state = self.state
        state.monitor = self.monitor.state_dict()
        state.train_seconds = time.perf_counter() - self.clock_start
        keep = {state.best_step} if state.best_step is not None and self.config.final_weights == "best" else set()
        rng_states = distributed.gather_objects(rng_state()) if self.world.active else None
        path = self.checkpoints_dir / checkpoint_name(state.step)
        model, optimizer = self.model, self.optimizer
        if self.fsdp:  # the whole state, gathered onto rank 0, in the format of one process's checkpoint
            weights, optimizer_state = fsdp.gather_full_state(self.model, self.optimizer)
            if self.world.is_main:
                fsdp.into_plain(self.plain, weights)
                model, optimizer = self.plain, fsdp.SavedOptimizer(optimizer_state)
        if self.world.is_main:  # the processes hold the same weights and optimizer state: one writes them
            path = save_checkpoint(self.checkpoints_dir, state.step, lambda out: self.save_weights(model, out),
                                   optimizer, self.scheduler, state.to_dict(), self.config.save_total_limit, keep,
                                   rng_states=rng_states)
        if self.world.active:  # the others may read it (rollback, best weights) once it is committed
            distributed.barrier()
        self.last_saved_step = state.step
        self.outcome.checkpoint = str(path.relative_to(self.run_dir))
        self.emit("checkpoint.saved", step=state.step, path=self.outcome.checkpoint, best=state.best_step == state.step)
        return path

    def save_interrupted(self, stop: GracefulStop) -> None:
        """A signal or ``request_stop`` asked to stop: checkpoint this step boundary (unless just saved) so resume loses nothing."""
        if self.state.step > 0 and self.last_saved_step != self.state.step:
            pause = time.perf_counter()
            self.save()
            self.state.overhead_seconds += time.perf_counter() - pause
        elif self.last_saved_step == self.state.step and self.state.step > 0:
            self.outcome.checkpoint = f"checkpoints/{checkpoint_name(self.state.step)}"
        stop.acknowledge()
        self.outcome.interrupted = stop.reason
        self.emit("train.interrupted", step=self.state.step, signal=stop.signal_name, reason=stop.reason,
                  checkpoint=self.outcome.checkpoint)

    def select_final_weights(self) -> None:
        """With ``final_weights: best``, load the best checkpoint's weights when it is not the last step."""
        state = self.state
        self.outcome.final_weights_step = state.step
        if self.config.final_weights != "best" or state.best_step is None or state.best_step == state.step:
            return
        path = self.checkpoints_dir / checkpoint_name(state.best_step)
        problems = verify_checkpoint(path) if path.is_dir() else [f"{path} is missing"]
        if problems:
            self.emit("train.best_unavailable", step=state.best_step, problems=problems,
                      message=f"the best checkpoint ({path.name}) is not intact; keeping the last step's weights")
            return
        self.load_weights(path / "weights")
        self.outcome.final_weights_step = checkpoint_step(path)
        self.emit("train.best_selected", step=state.best_step, metric=self.config.best_metric, value=state.best_value,
                  last_step=state.step, message=f"using the weights of step {state.best_step} "
                  f"({self.config.best_metric} {state.best_value:.4g}) rather than the last step's")


class _RolledBack(Exception):
    """Raised inside ``optimizer_step`` when a non-finite step was rolled back."""


def _trajectory_settings(config: FineTuningConfig) -> str:
    """A hash of the settings every process of a run must share (a process's own memory plan may differ: passes
    and checkpointing change memory, not results)."""
    import hashlib
    import json

    fields = config.model_dump(mode="json", exclude={"micro_batch_tokens", "gradient_checkpointing"})
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
