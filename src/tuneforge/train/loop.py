"""The training loop: ``fit``, one readable sequence of optimizer steps, watched by a ``TrainingMonitor``.

Per optimizer step: the micro-batches of one accumulation group are summed with token-level
normalisation (train/accumulation.py), a non-finite loss or gradient is caught before the update,
gradients are clipped (train/clipping.py), AdamW steps, the schedule advances. Metrics go to
``events.jsonl``; the monitor's issues are handled by the run's policy (train/issue_policy.py: warn,
stop, roll back to the last healthy checkpoint with a lower learning rate, train/rollback.py).
Evaluations (train/validation.py) track the best checkpoint and drive early stopping, when
train/cadence.py says they are due. A run resumed from a checkpoint continues exactly: weights,
optimizer, schedule, RNG states and the data position are restored (train/run_checkpoints.py).

This module is the run's state (``TrainingRun``) and its step loop; the concepts above are the
modules named. Tests inject loss faults at ``tuneforge.train.accumulation.training_loss_sums``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

from tuneforge.config import FineTuningConfig
from tuneforge.core.errors import TrainingError
from tuneforge.core.memory import current_memory_mb
from tuneforge.core.status import INTERRUPTED
from tuneforge.data.batching import epoch_batches
from tuneforge.data.tokenize import EncodedDataset
from tuneforge.model.loss import perplexity
from tuneforge.model.precision import resolve_precision
from tuneforge.monitor.events import EventWriter
from tuneforge.train import distributed, fsdp
from tuneforge.train.accumulation import GroupSums, accumulate_gradients, metric_sums_over_ranks, training_loss_sums
from tuneforge.train.cadence import is_due
from tuneforge.train.checkpoint import set_rng_state
from tuneforge.train.clipping import clip_gradients
from tuneforge.train.distributed import current_world, shard_group
from tuneforge.train.issue_policy import RolledBack, handle_issues, on_non_finite
from tuneforge.train.monitor import Issue, MonitorSettings, TrainingMonitor
from tuneforge.train.objectives import run_loss_sums
from tuneforge.train.optim import build_optimizer, build_scheduler, default_warmup, plan_steps
from tuneforge.train.outcome import TrainOutcome, complete_outcome
from tuneforge.train.run_checkpoints import clean_stale_staging, resume_newest, save, save_interrupted, select_final_weights
from tuneforge.train.signals import GracefulStop
from tuneforge.train.state import TrainState, data_fingerprint
from tuneforge.train.validation import HIGHER_IS_BETTER, evaluate

__all__ = ["HIGHER_IS_BETTER", "GroupSums", "TrainOutcome", "TrainingRun", "accumulate_gradients", "fit",
           "training_loss_sums"]


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
    run = TrainingRun(model, train_set, validation_set, config, run_dir, events, pad_token_id, save_weights,
                      on_event or (lambda event: None), monitor_settings)
    rng = run.start()
    with stop.deferring() if stop else nullcontext():
        if rng is not None:
            set_rng_state(rng)  # last, right before the first step: nothing may draw from the generators in between
        ending = run.train(stop)
        if ending == INTERRUPTED and stop is not None:
            save_interrupted(run, stop)
    if ending != INTERRUPTED:
        select_final_weights(run)
    return run.finish()


class TrainingRun:
    """The state of one call of ``fit``: model, optimizer, schedule, monitor and position.

    The loop's modules (validation, issue_policy, rollback, run_checkpoints) are functions of it.
    """

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
        """Write one event to events.jsonl and hand it to the caller's ``on_event``."""
        event = self.events.emit(type_, **fields)
        self.notify(event)
        return event

    # ------------------------------------------------------------------ start, resume, finish

    def start(self) -> dict[str, Any] | None:
        """Clean up after a killed save, resume if asked; return the RNG state to restore (None: fresh start)."""
        clean_stale_staging(self)
        rng = resume_newest(self) if self.config.resume else None
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

    def finish(self) -> TrainOutcome:
        """Hand the trained weights back to the caller's model (FSDP) and return the outcome, measured."""
        if self.fsdp:  # the caller's model (rank 0's whole one) gets the trained weights, as without FSDP
            weights, _ = fsdp.gather_full_state(self.model)
            if self.world.is_main:
                fsdp.into_plain(self.plain, weights)
                fsdp.unpark(self.plain, self.parked_device)
        return complete_outcome(self.outcome, self.state, self.config, self.steps_per_epoch, self.clock_start)

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
            except RolledBack:
                state = self.state
                continue
            end_of_epoch = state.batches_done_in_epoch >= len(batches)
            pause = time.perf_counter()
            ended_by = None
            if self.validation_set and self.validation_set.items and is_due(
                config.evaluation_strategy, config.eval_steps, state.step, end_of_epoch, self.total_steps
            ):
                eval_issues, ended_by = evaluate(self, len(batches))
                issues += eval_issues
            decision = handle_issues(self, issues)
            if decision == "rollback":
                state = self.state
                state.overhead_seconds += time.perf_counter() - pause
                continue
            ended_by = ended_by or decision
            saving_due = is_due(config.saving_strategy, config.save_steps, state.step, end_of_epoch, self.total_steps)
            best_now = config.final_weights == "best" and state.best_step == state.step
            if (saving_due or best_now) and state.step < self.total_steps and ended_by is None:
                save(self)
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
            sums.metrics = metric_sums_over_ranks(sums.metrics)
        loss = loss_sum / group_tokens
        grad_norm = clip_gradients(self.model, config.max_grad_norm)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        step = state.step + 1
        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if skipped:  # never apply a non-finite update; the policy decides whether the run goes on
            self.optimizer.zero_grad(set_to_none=True)
            issue = self.monitor.detect_issues({"step": step, "loss": loss, "grad_norm": grad_norm})[0]
            on_non_finite(self, issue, bool(self.monitor.report([issue])), loss, grad_norm)
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
            "grad_norm": grad_norm, "epoch": state.epoch_progress(len(batches)),
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


def _trajectory_settings(config: FineTuningConfig) -> str:
    """A hash of the settings every process of a run must share (a process's own memory plan may differ: passes
    and checkpointing change memory, not results)."""
    fields = config.model_dump(mode="json", exclude={"micro_batch_tokens", "gradient_checkpointing"})
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
