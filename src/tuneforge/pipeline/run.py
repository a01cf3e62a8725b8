"""``FineTuningPipeline``: one run, its stages in order: check inputs → load model → evaluate base → train → save → evaluate tuned.

The stages themselves live beside it: inputs.py (data, labels, encoding), run_dir.py (where the run
goes, what a resume may continue), evaluation.py (base and tuned evaluations), baselines.py (the
prompting baselines and the verdict), estimate.py (the time and cost estimate), cross_validation.py
(K folds). This module decides their order, the events around them and results.json.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tuneforge.config import FineTuningConfig
from tuneforge.core.allocator import loaded_allocator
from tuneforge.core.errors import ConfigError, TuneforgeError
from tuneforge.core.failures import describe_failure, write_error_log
from tuneforge.core.paths import atomic_write_json, atomic_write_text
from tuneforge.core.status import RunStatus
from tuneforge.data.examples import TrainingData
from tuneforge.data.snapshot import changed_originals, has_snapshot, read_snapshot, write_snapshot
from tuneforge.lineage import Parent, load_parent_weights, resolve_init_from
from tuneforge.model.adapters import count_parameters
from tuneforge.model.load import pick_device
from tuneforge.model.methods import TrainingMethod, get_method, make_trainable
from tuneforge.model.precision import resolve_precision
from tuneforge.model.resolve import resolve_model
from tuneforge.monitor.events import DiscardedEvents, EventWriter, read_events
from tuneforge.monitor.sinks import check_sinks, open_sinks
from tuneforge.pipeline.baselines import record_verdict, run_baselines
from tuneforge.pipeline.cross_validation import cross_validate
from tuneforge.pipeline.estimate import announce_estimate
from tuneforge.pipeline.evaluation import evaluate_base, evaluate_tuned, evaluation_setup, general_perplexity
from tuneforge.pipeline.inputs import EncodedInputs, encode_inputs, prepare_data
from tuneforge.pipeline.result import EventCallback, Notify, TrainingResult, train_summary
from tuneforge.pipeline.run_dir import RUN_DATA, free_run_dir, publish_final, resumable_run_dir, with_absolute_paths
from tuneforge.report import write_report
from tuneforge.train import distributed
from tuneforge.train.loop import fit
from tuneforge.train.memory_plan import check_memory_before_loading, fit_memory
from tuneforge.train.monitor import MonitorSettings
from tuneforge.train.signals import GracefulStop

logger = logging.getLogger(__name__)


class FineTuningPipeline:
    """One fine-tuning run from a validated ``FineTuningConfig``."""

    def __init__(self, config: FineTuningConfig, on_event: EventCallback | None = None, handle_signals: bool = True,
                 monitor_settings: MonitorSettings | None = None) -> None:
        self.config = with_absolute_paths(config)  # config.yaml must not depend on the directory it is read from
        self.monitor_settings = monitor_settings  # thresholds of the health checks (None: the defaults)
        self.on_event = on_event or (lambda event: None)
        # SIGINT/SIGTERM during training: finish the step, save a checkpoint, return status "interrupted".
        self.handle_signals = handle_signals
        self._stop = GracefulStop(handle_signals)  # also what request_stop sets; one per train() call
        self._sinks: list[Any] = []
        self._prior_issues: list[dict[str, Any]] = []
        self._prior_events: list[dict[str, Any]] = []  # events.jsonl of the earlier attempts, when resuming
        self._parent: Parent | None = None  # the run this one continues (init_from)

    def train(self, data: TrainingData | None = None) -> TrainingResult:
        """Run every stage and return the result; raises ``TuneforgeError`` subclasses on bad input.

        ``data`` defaults to ``config.data`` (and its validation/test files) prepared by
        ``TrainingDataManager``. Data, model and output are all checked before the run directory
        is created, so bad input never leaves a run directory behind.

        Started by torchrun / ``accelerate launch`` (``WORLD_SIZE`` > 1), the processes train
        together (train/distributed.py): rank 0 runs every stage and writes; the others receive its
        run directory and data, train in step with it and write nothing.
        """
        # --init-from: the parent's base, method and options, checked before any run directory exists.
        self.config, self._parent = resolve_init_from(self.config)
        created = distributed.join_process_group()
        try:
            world = distributed.current_world()
            if not world.active and self.config.distributed == "fsdp":
                raise ConfigError(["distributed: fsdp shards the model over several processes, and this is one; "
                                   "add --nproc N (N >= 2), start it under torchrun, or use --distributed ddp"])
            if world.active and self.config.cross_validation:
                raise ConfigError(["cross_validation: runs one fold after another in one process; "
                                   "start it without torchrun / --nproc"])
            return self._follow() if not world.is_main else self._train(data)
        finally:
            if created:
                distributed.leave_process_group()

    def _train(self, data: TrainingData | None) -> TrainingResult:
        config = self.config
        if config.cross_validation:
            return cross_validate(config, data, self._train_fold, self.on_event)
        if config.resume:
            run_dir, self.config = resumable_run_dir(config)
        else:
            run_dir = free_run_dir(config)
        check_sinks(config.report_to)
        changed: list[str] = []
        if data is None and config.resume and has_snapshot(run_dir / RUN_DATA):
            data = read_snapshot(run_dir / RUN_DATA)  # the splits the run trained on, whatever the cwd or config.data
            changed = changed_originals(run_dir / RUN_DATA)
        data = data or self.prepare_data()
        model_dir = resolve_model(config.model, on_convert=lambda msg: self.on_event({"type": "model.converting", "message": msg}))
        self.config, inputs = encode_inputs(self.config, data, model_dir)
        check_memory_before_loading(config, model_dir, inputs.train_set)  # refuse a run certain to be killed before it has a directory
        if config.resume:
            self._prior_events = list(read_events(run_dir / "events.jsonl"))
            self._prior_issues = [e for e in self._prior_events if e.get("type") == "issue.detected"]
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", self.config.to_yaml())  # auto fields beside their resolved values
        if not has_snapshot(run_dir / RUN_DATA):  # an older run gets its snapshot at its first resume
            originals = {name: getattr(config, name) for name in ("data", "validation_data", "test_data")}
            write_snapshot(data, run_dir / RUN_DATA, originals)
        if distributed.current_world().active:  # the other processes wait for this: where to train, on what
            distributed.broadcast_object((str(run_dir), data, str(model_dir)))
        self._sinks = open_sinks(config.report_to, run_dir)
        stop = self._stop
        with EventWriter(run_dir / "events.jsonl") as events, stop:
            result = TrainingResult(run_dir=run_dir, status=RunStatus.RUNNING, data={**data.summary(), **inputs.summary},
                                    lineage=self._parent.lineage() if self._parent else None)
            notify = self._notifier(events, result)
            notify("run.started", run_dir=str(run_dir), model=config.model, method=config.method, data=data.summary(),
                   resume=config.resume, pid=os.getpid(), allocator=loaded_allocator())
            if changed:
                notify("data.originals_changed", files=changed,
                       message=f"{', '.join(changed)} changed since the run started; resuming on the splits it trained on "
                               f"({run_dir / RUN_DATA}), as an exact resume must")
            try:
                self._run_stages(data, inputs, run_dir, events, result, stop)
                if result.status == RunStatus.RUNNING:
                    result.status = RunStatus.SUCCEEDED
            except KeyboardInterrupt as interrupt:
                result.status, result.error = RunStatus.CANCELLED, f"stopped at once by {interrupt or 'the user'}"
                raise
            except TuneforgeError as error:
                result.status, result.error = RunStatus.FAILED, str(error)
                raise
            except Exception as error:  # an unexpected failure is still recorded, its traceback in RUN_DIR/error.log
                log = write_error_log(error, run_dir)
                result.status = RunStatus.FAILED
                result.error = describe_failure(error, "the run") + (f"; the traceback is in {log}" if log else "")
                raise
            finally:
                self._finalize(run_dir, notify, result)
                self._stop = GracefulStop(self.handle_signals)  # a request belongs to the run it was made for
        return result

    def request_stop(self, reason: str = "stop requested") -> bool:
        """Ask the run to stop at the next optimizer-step boundary, as SIGTERM does; safe from any thread.

        For code holding a run: a job runner cancelling, a search pruner, an ``on_event`` callback. The
        step in progress is finished, a checkpoint saved, and ``train()`` returns status
        ``interrupted`` with ``reason`` in ``results.json`` (``train.interrupted``, ``error``) and the
        ``train.interrupted`` event; ``resume`` continues exactly. Asked before training starts, the
        run stops before its first step; asked after its last step, the run finishes as usual.
        Returns whether this request was the first (a later one does not replace its reason).
        """
        return self._stop.request(reason)

    def _finalize(self, run_dir: Path, notify: Notify, result: TrainingResult) -> None:
        """results.json, the closing event, the report. A full disk must not hide the error that ended the run."""
        for what, write in (("results.json", lambda: atomic_write_json(run_dir / "results.json", result.to_dict())),
                            ("the run.finished event", lambda: notify("run.finished", status=str(result.status), error=result.error)),
                            ("report.html", lambda: write_report(run_dir))):
            try:
                write()
            except (OSError, TuneforgeError) as error:
                logger.warning("could not write %s in %s: %s", what, run_dir, error)
        for sink in self._sinks:
            sink.close()
        self._sinks = []

    def prepare_data(self) -> TrainingData:
        """``config.data`` (and its validation/test files) read, checked by the data doctor and split."""
        return prepare_data(self.config)

    def _notifier(self, events: EventWriter, result: TrainingResult) -> Notify:
        """``notify(type, **fields)``: write an event, show it to the caller, keep detected issues."""

        def notify(type_: str, **fields: Any) -> dict[str, Any]:
            event = events.emit(type_, **fields)
            self._observe(event, result)
            return event

        return notify

    def _observe(self, event: dict[str, Any], result: TrainingResult) -> None:
        if event.get("type") == "issue.detected":
            result.issues.append({k: v for k, v in event.items() if k not in ("seq", "type", "time")})
        elif event.get("type") == "train.resumed":
            # Issues found before the checkpoint stay part of the run's story; later ones will be found again.
            earlier = [{k: v for k, v in e.items() if k not in ("seq", "type", "time")}
                       for e in self._prior_issues if int(e.get("step", 0)) <= event["step"]]
            result.issues[:0] = earlier
        for sink in self._sinks:
            sink.on_event(event)
        self.on_event(event)

    def _run_stages(self, data: TrainingData, inputs: EncodedInputs, run_dir: Path, events: EventWriter,
                    result: TrainingResult, stop: GracefulStop) -> None:
        config = self.config.concrete()  # no auto left: the values train/auto.py chose (or the config's own)
        notify = self._notifier(events, result)
        device = pick_device()
        result.hyperparameters = inputs.choices
        if inputs.choices:
            from tuneforge.train.auto import describe_summary

            notify("hyperparameters.chosen", hyperparameters=inputs.choices, message=describe_summary(inputs.choices))
        tokenizer, train_set, validation_set, model_dir = inputs.tokenizer, inputs.train_set, inputs.validation_set, inputs.model_dir
        notify("data.prepared", **inputs.summary, max_length=config.max_length,
               truncated_sources=(train_set.truncated_examples + validation_set.truncated_examples)[:20])
        precision = resolve_precision(config.precision, device)
        method = get_method(config.method)
        # The method picks the dtype: a frozen base stays bf16 from the start (base and tuned are evaluated alike).
        model = method.load_base(model_dir, device, config, precision)
        test, evaluation_args = evaluation_setup(config, data, inputs.labels)
        if config.evaluate_base and test:
            result.base = evaluate_base(model, tokenizer, test, evaluation_args, config, run_dir, self._prior_events,
                                        notify, self.on_event)
        if config.baselines and test:
            # Before training: the base model exists as itself only now (full fine-tuning changes it in place).
            result.baselines = run_baselines(model, tokenizer, data, test, evaluation_args, config, run_dir,
                                             self._prior_events, notify, self.on_event)

        before = general_perplexity(model, tokenizer, self.config.concrete()) if config.forgetting_check else None
        model = trainable_model(method, model, config, self._parent)
        if self._parent is not None:  # continued fine-tuning: the parent's weights instead of fresh ones
            notify("model.initialized", **self._parent.lineage(), message=self._parent.describe())
        trainable, total = count_parameters(model)
        result.model = {"name": config.model, "path": str(model_dir), "method": config.method, "device": device,
                        "precision": precision, "trainable_parameters": trainable, "total_parameters": total}
        notify("model.ready", **result.model)
        config = self.config = fit_memory(model, config, model_dir, train_set, trainable, precision, notify)
        estimate = announce_estimate(model, inputs, self.config.concrete(), notify)
        outcome = fit(model, train_set, validation_set, config, run_dir, events, tokenizer.pad_token_id,
                      save_weights=method.save, on_event=lambda event: self._observe(event, result),
                      stop=stop, monitor_settings=self.monitor_settings)
        _after_training_together()
        result.train = train_summary(outcome, config)
        if estimate is not None:
            result.train["estimate"] = estimate
        if outcome.interrupted:
            result.status = RunStatus.INTERRUPTED
            by = outcome.interrupted if stop.signal_name else f"request ({outcome.interrupted})"
            result.error = f"stopped by {by} after step {outcome.steps}; continue with: tuneforge resume {run_dir}"
            return
        publish_final(model, tokenizer, run_dir, method)
        notify("model.saved", path=method.output_dir, step=outcome.final_weights_step)
        if before is not None:
            from tuneforge.evaluate.forgetting import forgetting_summary

            result.forgetting = forgetting_summary(before, general_perplexity(model, tokenizer, self.config.concrete()))
            notify("eval.forgetting", **result.forgetting)

        if test:
            evaluate_tuned(model, tokenizer, test, evaluation_args, config, outcome.train_seconds, inputs.labels, model_dir,
                           run_dir, result, notify, self.on_event)
            if result.baselines:
                record_verdict(result, notify)

    def _follow(self) -> TrainingResult:
        """Rank > 0 of a distributed run: train in step with rank 0 on the data it sends; write nothing."""
        received, data, resolved = distributed.broadcast_object(None)
        run_dir, model_dir = Path(received), Path(resolved)
        # Rank 0's copy of the model when this machine sees it (no two processes converting or downloading at once).
        self.config, inputs = encode_inputs(self.config, data, model_dir if model_dir.is_dir() else resolve_model(self.config.model))
        config = self.config.concrete()  # the auto fields as _encode chose them from the data, as on rank 0
        method, device = get_method(config.method), pick_device()
        precision = resolve_precision(config.precision, device)
        model = method.load_base(inputs.model_dir, device, config, precision)
        model = trainable_model(method, model, config, self._parent)
        trainable, _ = count_parameters(model)  # this process's own memory plan (it changes passes, not results)
        config = fit_memory(model, config, inputs.model_dir, inputs.train_set, trainable, precision, lambda *a, **k: None)
        with self._stop as stop:
            outcome = fit(model, inputs.train_set, inputs.validation_set, config, run_dir, DiscardedEvents(),
                          inputs.tokenizer.pad_token_id, save_weights=method.save, stop=stop,
                          monitor_settings=self.monitor_settings)
        _after_training_together()
        self._stop = GracefulStop(self.handle_signals)
        status = RunStatus.INTERRUPTED if outcome.interrupted else RunStatus.SUCCEEDED
        return TrainingResult(run_dir=run_dir, status=status, train=train_summary(outcome, config))

    def _train_fold(self, config: FineTuningConfig, data: TrainingData) -> TrainingResult:
        """One fold of a cross-validation: an ordinary run with this pipeline's callback and settings."""
        return FineTuningPipeline(config, on_event=self.on_event, handle_signals=self.handle_signals,
                                  monitor_settings=self.monitor_settings).train(data)


def _after_training_together() -> None:
    """Under several processes, wait until every one has finished training (all its collectives done) before any
    goes on: a follower then leaves its process group while rank 0 evaluates and writes, with nothing in flight
    between them. (CI once saw a follower that left earlier die of SIGABRT at exit, "terminate called without
    an active exception"; not reproduced since.) Here rather than at the very end so that no follower waits out
    rank 0's evaluation inside a collective, whose time-out would stop the run."""
    if distributed.current_world().active:
        distributed.barrier()


def trainable_model(method: TrainingMethod, model: Any, config: FineTuningConfig, parent: Parent | None) -> Any:
    """The method's trainable wrapper of ``model``, freshly initialised from ``config.seed`` (the same in every
    process), or with the ``parent`` run's weights (``init_from``)."""
    import torch

    torch.manual_seed(config.seed)
    model = make_trainable(method, model, config)
    if parent is not None:
        load_parent_weights(model, parent)
    return model
