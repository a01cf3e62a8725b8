"""``FineTuningPipeline``: validate data → load model → evaluate base → train → save → evaluate tuned.

The order of stages and the contents of the run directory live here and nowhere else:

    runs/<name>/config.yaml, events.jsonl, data/, checkpoints/, adapter/ | model/, results.json, predictions.jsonl,
                base_predictions.jsonl, baseline_predictions.jsonl, report.html, error.log (after an unexpected error)

A run directory is self-sufficient: config.yaml holds absolute paths, and data/ the prepared splits
the run trains on (with their SHA-256), so ``resume`` needs nothing else and works from any
directory, also for a run started from in-memory records. A resumed run reuses the base model's
evaluation of its first attempt (events.jsonl ``eval.finished`` + base_predictions.jsonl).

Every input problem (data, model, config) is found before the run directory is created.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneforge.config import FineTuningConfig
from tuneforge.core.errors import ConfigError, DatasetError, TuneforgeError
from tuneforge.core.failures import describe_failure, write_error_log
from tuneforge.core.paths import atomic_write_json, atomic_write_text, publish_directory
from tuneforge.core.status import RunStatus
from tuneforge.data.examples import TrainingData
from tuneforge.data.manager import TrainingDataManager
from tuneforge.data.snapshot import changed_originals, has_snapshot, read_snapshot, write_snapshot
from tuneforge.data.tokenize import EncodedDataset
from tuneforge.evaluate.metrics import is_label_task, normalize_answer
from tuneforge.evaluate.run import ModelEvaluation, evaluate_model
from tuneforge.lineage import Parent, load_parent_weights, resolve_init_from
from tuneforge.model.adapters import count_parameters
from tuneforge.model.load import load_tokenizer, pick_device
from tuneforge.model.methods import TrainingMethod, get_method, make_trainable
from tuneforge.model.precision import resolve_precision
from tuneforge.model.resolve import EMBEDDED_MODELS, resolve_model
from tuneforge.monitor.events import DiscardedEvents, EventWriter, read_events
from tuneforge.monitor.sinks import check_sinks, open_sinks
from tuneforge.report import write_report
from tuneforge.train import distributed
from tuneforge.train.loop import TrainOutcome, fit
from tuneforge.train.memory_plan import check_memory_before_loading, fit_memory
from tuneforge.train.monitor import MonitorSettings
from tuneforge.train.signals import GracefulStop

EventCallback = Callable[[dict[str, Any]], None]
logger = logging.getLogger(__name__)

RUN_DATA = "data"  # RUN_DIR/data/: the prepared splits the run trains on (data/snapshot.py)
BASE_PREDICTIONS = "base_predictions.jsonl"  # the base model's answers, so a resumed run need not evaluate it again
BASELINE_PREDICTIONS = "baseline_predictions.jsonl"  # the prompting baselines' answers (evaluate/baselines.py)

# Settings a resumed run may change: they do not touch the training trajectory.
RESUME_MAY_CHANGE = {"resume", "output", "name", "report_to", "logging_steps", "evaluate_base", "max_eval_examples",
                     "baselines", "baseline_shots", "baseline_retriever", "judge", "judge_rubric", "forgetting_check",
                     "max_new_tokens", "evaluation_metrics", "json_schema", "cost_per_hour", "on_issue", "max_rollbacks", "estimate_steps"}


@dataclass
class TrainingResult:
    """The outcome of a run; ``to_dict()`` is exactly what ``results.json`` holds."""

    run_dir: Path
    status: RunStatus  # see core/status.py; compares equal to its word ("succeeded", ...)
    base: ModelEvaluation | None = None
    tuned: ModelEvaluation | None = None
    train: dict[str, Any] = field(default_factory=dict)
    issues: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Baseline.to_dict() (evaluate/baselines.py)
    verdict: dict[str, Any] | None = None  # was fine-tuning worth it: evaluate.baselines.verdict
    cross_validation: dict[str, Any] | None = None  # K folds: per-fold and mean ± std scores (--cross-validation K)
    forgetting: dict[str, Any] | None = None  # general-text perplexity before/after: evaluate/forgetting.py
    error_analysis: dict[str, Any] | None = None  # the tuned model's mistakes, fixed and broken: evaluate/error_analysis.py
    result_checks: list[dict[str, Any]] = field(default_factory=list)  # problems with the tuned answers: train/result_checks.py
    lineage: dict[str, Any] | None = None  # the run it continues (--init-from): lineage.Parent.lineage()
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> value, reason, auto: train/auto.py

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "base": self.base.performance if self.base else None,
            "tuned": self.tuned.performance if self.tuned else None,
            "train": self.train,
            "hyperparameters": self.hyperparameters,
            "issues": self.issues,
            "task": (self.tuned or self.base).task if (self.tuned or self.base) else None,
            "data": self.data,
            "model": self.model,
            "evaluation": {
                "base": self.base.resources if self.base else None,
                "tuned": self.tuned.resources if self.tuned else None,
            },
            "baselines": self.baselines,
            "verdict": self.verdict,
            "error_analysis": self.error_analysis,
            "result_checks": self.result_checks,
            "forgetting": self.forgetting,
            "cross_validation": self.cross_validation,
            "lineage": self.lineage,
            "error": self.error,
            "run_dir": str(self.run_dir),
        }


@dataclass
class EncodedInputs:
    """What the stages need that was checked before the run directory was made."""

    model_dir: Path
    tokenizer: Any
    train_set: EncodedDataset
    validation_set: EncodedDataset
    labels: list[str] | None  # the label set when the answers are class labels
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)  # the hyper-parameters and why (train/auto.py)

    @property
    def summary(self) -> dict[str, Any]:
        return {
            "train_tokens": self.train_set.total_tokens,
            "trained_tokens_per_epoch": self.train_set.trained_tokens,
            "truncated_examples": len(self.train_set.truncated_examples) + len(self.validation_set.truncated_examples),
            "dropped_examples": self.train_set.dropped_examples + self.validation_set.dropped_examples,
            "labels": self.labels,
        }


def label_space(data: TrainingData) -> list[str] | None:
    """The answers' label set when, over all splits, the answers look like class labels; else None."""
    answers = [example.output for example in data.examples + data.validation + data.test if not example.is_text]
    if not answers or not is_label_task(answers):
        return None
    return sorted({normalize_answer(answer) for answer in answers})


def with_absolute_paths(config: FineTuningConfig) -> FineTuningConfig:
    """``config`` with its data files and a local model as absolute paths (names and hub ids stay as they are).

    The run's ``config.yaml`` then means the same thing from any directory: ``resume``, ``chat --adapter``
    and ``eval --adapter`` find the data and the base model wherever they are started. A path that
    does not exist here is left alone (it is reported when it is used).
    """
    updates: dict[str, str] = {}
    for name in ("data", "validation_data", "test_data", "model", "init_from"):
        value = getattr(config, name)
        if not value or (name == "model" and value.strip().lower() in EMBEDDED_MODELS):
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and path.exists():
            updates[name] = str(path.resolve())
    return config.model_copy(update=updates) if updates else config


def default_run_dir(config: FineTuningConfig) -> Path:
    # --adapter-name: runs on one base kept side by side as runs/<adapter name>/
    name = config.name or config.adapter_name or f"{Path(config.model).name.lower()}-{get_method(config.method).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / name


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
            return self._cross_validate(data)
        run_dir = self._resumable_run_dir() if config.resume else self._free_run_dir()
        check_sinks(config.report_to)
        changed: list[str] = []
        if data is None and config.resume and has_snapshot(run_dir / RUN_DATA):
            data = read_snapshot(run_dir / RUN_DATA)  # the splits the run trained on, whatever the cwd or config.data
            changed = changed_originals(run_dir / RUN_DATA)
        data = data or self.prepare_data()
        model_dir = resolve_model(config.model, on_convert=lambda msg: self.on_event({"type": "model.converting", "message": msg}))
        inputs = self._encode(data, model_dir)
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
                   resume=config.resume, pid=os.getpid())
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

    def _finalize(self, run_dir: Path, notify: Callable[..., dict[str, Any]], result: TrainingResult) -> None:
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
        config = self.config
        if not config.data:
            raise ConfigError(["data: no training data given; pass --data FILE"])
        manager = TrainingDataManager(config.data_format, config.text_template)
        # skip_invalid=False still runs the full data doctor first: training refuses data with errors.
        return manager.prepare_data(
            config.data, config.validation_data, config.test_data, config.validation_split, config.test_split, config.seed,
            skip_invalid=config.skip_invalid,
        )

    def _notifier(self, events: EventWriter, result: TrainingResult) -> Callable[..., dict[str, Any]]:
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

    def _encode(self, data: TrainingData, model_dir: Path) -> EncodedInputs:
        """Tokenize the train and validation sets; refuse data with nothing left to learn from."""
        from tuneforge.train.auto import encode_and_choose

        tokenizer = load_tokenizer(model_dir, self.config.trust_remote_code)
        labels = label_space(data)
        # Fields left auto are chosen from the encoded data (train/auto.py); self.config keeps them auto, with
        # the chosen values in config.resolved, and the stages read config.concrete().
        chosen = encode_and_choose(self.config, tokenizer, data, model_dir, get_method(self.config.method), labels)
        self.config = chosen.config
        config, train_set, validation_set = self.config.concrete(), chosen.train_set, chosen.validation_set
        if not train_set.items:
            raise DatasetError(
                f"no training example has a token left to learn from at max_length={config.max_length}; "
                "raise --max-length or check that the examples have answers"
            )
        if config.early_stopping and not validation_set.items:
            raise ConfigError(["early_stopping: there are no validation examples to stop on; "
                               "give --validation-data or a --validation-split above 0"])
        return EncodedInputs(model_dir, tokenizer, train_set, validation_set, labels, chosen.summary)

    def _estimate(self, model: Any, inputs: EncodedInputs, notify: Callable[..., dict[str, Any]]) -> dict[str, Any] | None:
        """Time a few real steps first (the model is left unchanged) and announce the run's expected time and cost.

        Skipped when resuming (the first attempt announced it) and with ``estimate_steps: 0``.
        """
        from tuneforge.train.estimate import estimate_training

        config = self.config.concrete()
        if config.resume or not config.estimate_steps or distributed.current_world().active:
            return None  # (with several processes one process's timing of the whole step would mislead)
        estimate = estimate_training(model, inputs.train_set, inputs.validation_set, config,
                                     inputs.tokenizer.pad_token_id, steps=config.estimate_steps).to_dict()
        if estimate["seconds"] is None:
            return None
        notify("train.estimate", **estimate, message=_estimate_message(estimate, config))
        return estimate

    def _free_run_dir(self) -> Path:
        """The run directory to use; refuses one that already holds files (never overwrite a run)."""
        run_dir = Path(self.config.output) if self.config.output else default_run_dir(self.config)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise ConfigError([f"output: {run_dir} already exists and is not empty; choose another --output or remove it"])
        return run_dir

    def _resumable_run_dir(self) -> Path:
        """The run directory to resume: it must hold a run whose training settings match this config."""
        from tuneforge.config import load_config

        if not self.config.output:
            raise ConfigError(["resume: name the run directory to resume with --output (or use: tuneforge resume RUN_DIR)"])
        run_dir = Path(self.config.output)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError([f"resume: {run_dir} is not a tuneforge run directory (no config.yaml); "
                               "start a new run without --resume"])
        saved = with_absolute_paths(load_config(run_dir / "config.yaml"))
        if saved.resolved and not self.config.resolved:  # train with the values the first attempt chose
            self.config = self.config.model_copy(update={"resolved": saved.resolved})
        changed = [f"{name}: the run has {getattr(saved, name)!r}, this config {getattr(self.config, name)!r}"
                   for name in type(self.config).model_fields
                   if name not in RESUME_MAY_CHANGE and getattr(saved, name) != getattr(self.config, name)]
        if changed:
            raise ConfigError(changed + [f"a resumed run keeps its own settings: run `tuneforge resume {run_dir}`"])
        writer = _live_writer(run_dir)
        if writer is not None:
            raise ConfigError([f"resume: {run_dir} is still being trained by process {writer}; "
                               f"stop it first (Ctrl-C or kill -TERM {writer} saves a checkpoint), then resume"])
        results = run_dir / "results.json"
        if results.is_file():
            try:
                status = json.loads(results.read_text()).get("status")
            except (OSError, ValueError):
                status = None
            if status == RunStatus.SUCCEEDED:
                raise ConfigError([f"resume: {run_dir} has already finished (results.json says succeeded); nothing to resume"])
        return run_dir

    def _run_stages(self, data: TrainingData, inputs: EncodedInputs, run_dir: Path, events: EventWriter,
                    result: TrainingResult, stop: GracefulStop) -> None:
        import torch

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
        evaluation_args = dict(max_length=config.max_length, batch_size=config.batch_size, labels=inputs.labels,
                               max_new_tokens=config.max_new_tokens, metrics=config.evaluation_metrics)
        test = data.test[: config.max_eval_examples] if config.max_eval_examples else data.test
        if config.json_schema:  # the run's schema for every test example without its own (evaluate/answer_checks.py)
            from tuneforge.evaluate.answer_checks import load_json_schema, with_json_schema

            test = with_json_schema(test, load_json_schema(config.json_schema))
            evaluation_args["metrics"] = list(dict.fromkeys([*config.evaluation_metrics, "json_schema"]))
        if config.evaluate_base and test:
            key = _evaluation_key(config.model, test, evaluation_args)
            result.base = _recorded_base(run_dir, self._prior_events, key) if config.resume else None
            if result.base is not None:  # the first attempt evaluated this very base on this very test set
                notify("eval.reused", model="base", examples=len(test), performance=result.base.performance,
                       resources=result.base.resources, message="the base model's evaluation from the first attempt")
            else:
                notify("eval.started", model="base", examples=len(test))
                result.base = evaluate_model(model, tokenizer, test, **evaluation_args, cost_per_hour=config.cost_per_hour,
                                             on_progress=lambda n: self.on_event({"type": "eval.progress", "model": "base", "done": n}))
                _write_jsonl(run_dir / BASE_PREDICTIONS, result.base.predictions)
                notify("eval.finished", model="base", performance=result.base.performance, resources=result.base.resources,
                       task=result.base.task, key=key, predictions=len(result.base.predictions))
        if config.baselines and test:
            # Before training: the base model exists as itself only now (full fine-tuning changes it in place).
            result.baselines = self._baselines(model, tokenizer, data, test, evaluation_args, run_dir, notify)

        before = self._general_perplexity(model, tokenizer) if config.forgetting_check else None
        model = _trainable(method, model, config, self._parent)
        if self._parent is not None:  # continued fine-tuning: the parent's weights instead of fresh ones
            notify("model.initialized", **self._parent.lineage(), message=self._parent.describe())
        trainable, total = count_parameters(model)
        result.model = {"name": config.model, "path": str(model_dir), "method": config.method, "device": device,
                        "precision": precision, "trainable_parameters": trainable, "total_parameters": total}
        notify("model.ready", **result.model)
        config = self.config = fit_memory(model, config, model_dir, train_set, trainable, precision, notify)
        estimate = self._estimate(model, inputs, notify)


        outcome = fit(model, train_set, validation_set, config, run_dir, events, tokenizer.pad_token_id,
                      save_weights=method.save, on_event=lambda event: self._observe(event, result),
                      stop=stop, monitor_settings=self.monitor_settings)
        result.train = _train_summary(outcome, config)
        if estimate is not None:
            result.train["estimate"] = estimate
        if outcome.interrupted:
            result.status = RunStatus.INTERRUPTED
            by = outcome.interrupted if stop.signal_name else f"request ({outcome.interrupted})"
            result.error = f"stopped by {by} after step {outcome.steps}; continue with: tuneforge resume {run_dir}"
            return
        _publish_final(model, tokenizer, run_dir, method)
        notify("model.saved", path=method.output_dir, step=outcome.final_weights_step)
        if before is not None:
            from tuneforge.evaluate.forgetting import forgetting_summary

            result.forgetting = forgetting_summary(before, self._general_perplexity(model, tokenizer))
            notify("eval.forgetting", **result.forgetting)

        if test:
            notify("eval.started", model="tuned", examples=len(test))
            result.tuned = evaluate_model(model, tokenizer, test, **evaluation_args, cost_per_hour=config.cost_per_hour,
                                          training_time=outcome.train_seconds,
                                          on_progress=lambda n: self.on_event({"type": "eval.progress", "model": "tuned", "done": n}))
            notify("eval.finished", model="tuned", performance=result.tuned.performance, resources=result.tuned.resources)
            _write_predictions(run_dir, result.base, result.tuned)
            if result.tuned.predictions:
                from tuneforge.evaluate.error_analysis import error_analysis
                from tuneforge.train.result_checks import check_predictions

                # Empty, echoed, collapsed or endless answers: what the scores alone do not say.
                result.result_checks = [finding.to_dict() for finding in check_predictions(result.tuned.predictions)]
                for finding in result.result_checks:
                    notify("results.checked", **finding)

                result.error_analysis = error_analysis(result.tuned.predictions, result.base.predictions if result.base else None,
                                                       result.tuned.task, inputs.labels)
            if config.judge:
                self._judge(model_dir, result, notify)
            if result.baselines:
                from tuneforge.evaluate.baselines import candidates_of, verdict

                result.verdict = verdict({"performance": result.tuned.performance, "resources": result.tuned.resources},
                                         candidates_of(result.base, result.baselines))
                if result.verdict:
                    notify("eval.verdict", **result.verdict)

    def _follow(self) -> TrainingResult:
        """Rank > 0 of a distributed run: train in step with rank 0 on the data it sends; write nothing."""
        received, data, resolved = distributed.broadcast_object(None)
        run_dir, model_dir = Path(received), Path(resolved)
        # Rank 0's copy of the model when this machine sees it (no two processes converting or downloading at once).
        inputs = self._encode(data, model_dir if model_dir.is_dir() else resolve_model(self.config.model))
        config = self.config.concrete()  # the auto fields as _encode chose them from the data, as on rank 0
        method, device = get_method(config.method), pick_device()
        precision = resolve_precision(config.precision, device)
        model = method.load_base(inputs.model_dir, device, config, precision)
        model = _trainable(method, model, config, self._parent)
        trainable, _ = count_parameters(model)  # this process's own memory plan (it changes passes, not results)
        config = fit_memory(model, config, inputs.model_dir, inputs.train_set, trainable, precision, lambda *a, **k: None)
        with self._stop as stop:
            outcome = fit(model, inputs.train_set, inputs.validation_set, config, run_dir, DiscardedEvents(),
                          inputs.tokenizer.pad_token_id, save_weights=method.save, stop=stop,
                          monitor_settings=self.monitor_settings)
        self._stop = GracefulStop(self.handle_signals)
        status = RunStatus.INTERRUPTED if outcome.interrupted else RunStatus.SUCCEEDED
        return TrainingResult(run_dir=run_dir, status=status, train=_train_summary(outcome, config))

    def _cross_validate(self, data: TrainingData | None) -> TrainingResult:
        """K runs under RUN_DIR/fold-<i>: fold i's examples are its test set, the other train and test examples
        its training set (validation stays the validation set). results.json holds every fold and mean ± std."""
        from tuneforge.evaluate.folds import make_folds, summarize_folds

        config = self.config
        if config.resume:
            raise ConfigError(["cross_validation: resume one fold's run directory (RUN_DIR/fold-<i>) instead"])
        root = self._free_run_dir()
        data = data or self.prepare_data()
        pool = data.examples + data.test
        folds = make_folds(pool, config.cross_validation, config.seed)
        root.mkdir(parents=True, exist_ok=True)
        result = TrainingResult(run_dir=root, status=RunStatus.SUCCEEDED, data=data.summary())
        runs = []
        for number, fold in enumerate(folds, start=1):
            held = set(fold)
            fold_data = TrainingData(examples=[e for i, e in enumerate(pool) if i not in held], validation=data.validation,
                                     test=[pool[i] for i in fold], metadata=data.metadata)
            fold_config = config.model_copy(update={"cross_validation": None, "output": str(root / f"fold-{number}"), "name": None})
            self.on_event({"type": "cv.fold", "fold": number, "folds": len(folds), "test": len(fold)})
            outcome = FineTuningPipeline(fold_config, on_event=self.on_event, handle_signals=self.handle_signals,
                                         monitor_settings=self.monitor_settings).train(fold_data)
            runs.append({"fold": number, "run_dir": str(outcome.run_dir), "status": str(outcome.status), "test": len(fold),
                         "base": outcome.base.performance if outcome.base else None,
                         "tuned": outcome.tuned.performance if outcome.tuned else None})
            if outcome.status != RunStatus.SUCCEEDED:
                result.status, result.error = outcome.status, f"fold {number}: {outcome.error}"
                break
        tuned = [run["tuned"] for run in runs if run["tuned"]]
        base = [run["base"] for run in runs if run["base"]]
        result.cross_validation = {"k": len(folds), "folds": runs, "tuned": summarize_folds(tuned) if tuned else {},
                                   "base": summarize_folds(base) if base else {}}
        atomic_write_json(root / "results.json", result.to_dict())
        write_report(root)  # the folds' mean ± std, linking each fold's own report
        return result

    def _general_perplexity(self, model: Any, tokenizer: Any) -> float:
        from tuneforge.evaluate.forgetting import general_perplexity

        config = self.config.concrete()
        return general_perplexity(model, tokenizer, config.max_length, config.batch_size)

    def _judge(self, model_dir: Path, result: TrainingResult, notify: Callable[..., dict[str, Any]]) -> None:
        """LLM-as-judge scores (evaluate/judge.py) of the base and tuned answers, added to their performance."""
        from tuneforge.evaluate.judge import DEFAULT_RUBRIC, judge_answers
        from tuneforge.model.load import load_model

        config = self.config
        judge_dir = model_dir if config.judge == "base" else resolve_model(config.judge)
        judge = load_model(judge_dir, pick_device(), config.trust_remote_code)
        judge_tokenizer = load_tokenizer(judge_dir, config.trust_remote_code)
        for name, evaluation in (("base", result.base), ("tuned", result.tuned)):
            if evaluation is None or not evaluation.predictions:
                continue
            scores = judge_answers(judge, judge_tokenizer, evaluation.predictions, config.judge_rubric or DEFAULT_RUBRIC)
            evaluation.performance.update({k: float(scores[k]) for k in ("judge_score", "judge_agreement", "judge_kappa")})
            notify("eval.judged", model=name, judge=config.judge, **{k: v for k, v in scores.items() if k.startswith("judge_")})
        del judge

    def _baselines(self, model: Any, tokenizer: Any, data: TrainingData, test: list[Any], evaluation_args: dict[str, Any],
                   run_dir: Path, notify: Callable[..., dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The prompting baselines (evaluate/baselines.py) of the base model on ``test``, shots from the train split only.

        A resumed run reuses the first attempt's (events.jsonl ``baselines.finished`` with the same key).
        """
        from tuneforge.evaluate.baselines import evaluate_baselines

        config = self.config
        key = _evaluation_key(config.model, test, {**evaluation_args, "shots": config.baseline_shots, "seed": config.seed,
                                                   "retriever": config.baseline_retriever,
                                                   "train": [example.to_dict() for example in data.examples]})
        recorded = [e for e in self._prior_events if e.get("type") == "baselines.finished" and e.get("key") == key]
        if recorded and isinstance(recorded[-1].get("baselines"), dict):
            return recorded[-1]["baselines"]
        notify("baselines.started", examples=len(test), shots=config.baseline_shots, retriever=config.baseline_retriever)
        found = evaluate_baselines(model, tokenizer, data.examples, test, shots=config.baseline_shots,
                                   retriever=config.baseline_retriever, seed=config.seed,
                                   on_progress=lambda name, n: self.on_event({"type": "eval.progress", "model": name, "done": n}),
                                   **evaluation_args)
        baselines = {name: baseline.to_dict() for name, baseline in found.items()}
        _write_jsonl(run_dir / BASELINE_PREDICTIONS, [{"baseline": name, **row} for name, baseline in found.items()
                                                       for row in baseline.evaluation.predictions])
        notify("baselines.finished", key=key, baselines=baselines)
        return baselines


def _estimate_message(estimate: dict[str, Any], config: FineTuningConfig) -> str:
    seconds = estimate["seconds"]
    text = (f"estimated training time {_duration(seconds)} ({estimate['optimizer_steps']} steps, "
            f"{estimate['tokens']:,} tokens at a measured {estimate['tokens_per_second']:,.0f} tokens/s"
            + (f", {estimate['evaluations']} evaluations {_duration(estimate['eval_seconds'])}" if estimate["evaluations"] else "")
            + ")")
    if estimate.get("cost") is not None:
        text += f"; cost {estimate['cost']:.4f} at {config.cost_per_hour}/hour"
    return text


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _trainable(method: TrainingMethod, model: Any, config: FineTuningConfig, parent: Parent | None) -> Any:
    """The method's trainable wrapper of ``model``, freshly initialised from ``config.seed`` (the same in every
    process), or with the ``parent`` run's weights (``init_from``)."""
    import torch

    torch.manual_seed(config.seed)
    model = make_trainable(method, model, config)
    if parent is not None:
        load_parent_weights(model, parent)
    return model


def _train_summary(outcome: TrainOutcome, config: FineTuningConfig) -> dict[str, Any]:
    summary = asdict(outcome)
    summary["train_seconds"] = round(outcome.train_seconds, 2)
    summary["overhead_seconds"] = round(outcome.overhead_seconds, 2)
    summary["tokens_per_second"] = round(outcome.tokens_per_second, 1)
    summary["compute_cost"] = round(outcome.train_seconds / 3600 * config.cost_per_hour, 4)
    summary["learning_rate"] = config.resolved_learning_rate
    return summary


def _live_writer(run_dir: Path) -> int | None:
    """The process still writing ``run_dir`` (its latest attempt has no run.finished and is alive), if any."""
    from tuneforge.runs import process_alive

    pid, finished = None, True
    for event in read_events(run_dir / "events.jsonl"):
        if event.get("type") == "run.started":
            pid, finished = event.get("pid"), False
        elif event.get("type") == "run.finished":
            finished = True
    if finished or not isinstance(pid, int) or pid == os.getpid():
        return None
    return pid if process_alive(pid) else None


def _publish_final(model: Any, tokenizer: Any, run_dir: Path, method: TrainingMethod) -> None:
    """Save the final weights in the method's ``output_dir`` (``adapter/``, ``model/``) through a staging directory."""
    final = run_dir / method.output_dir
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=run_dir))
    try:
        method.save(model, staging)
        tokenizer.save_pretrained(staging)
        publish_directory(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _evaluation_key(model: str, test: list[Any], evaluation_args: dict[str, Any]) -> str:
    """A fingerprint of everything that decides an evaluation's result: model, test examples, settings."""
    content = {"model": model, "examples": [(example.to_dict(), example.source) for example in test],
               **{name: list(value) if isinstance(value, (list, tuple)) else value for name, value in evaluation_args.items()}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _recorded_base(run_dir: Path, events: list[dict[str, Any]], key: str) -> ModelEvaluation | None:
    """The base evaluation an earlier attempt recorded with this ``key`` (scores in events, predictions in a file).

    None when there is none, or its predictions file is missing or damaged: then the base is evaluated again.
    """
    recorded = [e for e in events if e.get("type") == "eval.finished" and e.get("model") == "base" and e.get("key") == key]
    if not recorded or not isinstance(recorded[-1].get("performance"), dict):
        return None
    event = recorded[-1]
    try:
        lines = (run_dir / BASE_PREDICTIONS).read_text(encoding="utf-8").splitlines()
        predictions = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    if len(predictions) != event.get("predictions") or not all(isinstance(p, dict) for p in predictions):
        return None
    return ModelEvaluation(performance=event["performance"], resources=dict(event.get("resources") or {}),
                           task=str(event.get("task") or "generation"), predictions=predictions)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _write_predictions(run_dir: Path, base: ModelEvaluation | None, tuned: ModelEvaluation) -> None:
    """One line per test example: the reference and both models' answers, for error analysis."""
    base_answers = [p["prediction"] for p in base.predictions] if base else [None] * len(tuned.predictions)
    lines = []
    for base_answer, row in zip(base_answers, tuned.predictions):
        lines.append(json.dumps({"source": row["source"], "input": row["input"], "reference": row["reference"],
                                 "base": base_answer, "tuned": row["prediction"]}))
    atomic_write_text(run_dir / "predictions.jsonl", "\n".join(lines) + ("\n" if lines else ""))
