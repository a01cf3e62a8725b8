"""One trial of a search: an ordinary run directory that reports its evaluations to Optuna and stops when pruned.

A trial is ``FineTuningPipeline`` on the base config with the trial's parameters, in
``SEARCH_DIR/trial-NNNN/``. Every evaluation during training (the loop's ``eval.result`` event) is
reported with ``trial.report(value, step)``; when the pruner says so, the run's own event callback
calls ``pipeline.request_stop``: the step finishes, a checkpoint is saved, the run ends
``interrupted``, and the trial is PRUNED. Nothing in the pipeline knows about the search.

What trials are scored on: the validation split (the test split is kept for the best trial only).
A validation metric (``validation_loss``, ...) is read from the evaluation of the weights the run
kept (``final_weights``); any other evaluation metric (``accuracy``, ``f1``, ...) from the tuned
model's evaluation on the validation split. Trials skip the base evaluation, the baselines and the
forgetting check: those are the same for every trial.

A retried trial (its process was killed) resumes the killed trial's run directory, so the search
continues exactly where it stopped.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneforge.core.errors import TuneforgeError
from tuneforge.core.status import RunStatus
from tuneforge.data.examples import TrainingData
from tuneforge.search.space import VALIDATION_METRICS, SearchSpec, objective_key, objective_metric
from tuneforge.search.study import worker_id

SearchEvent = Callable[[dict[str, Any]], None]
# Per trial, what is the same for every trial and so is left to the best trial's test evaluation.
TRIAL_FIELDS = {"evaluate_base": False, "baselines": False, "forgetting_check": False, "cross_validation": None,
                "name": None, "resume": False}


class SearchInterrupted(Exception):
    """A signal stopped the trial in progress (it kept a checkpoint). Not a ``TuneforgeError`` on purpose:
    ``study.optimize`` catches those as failed trials and goes on, but this must end the search."""

    def __init__(self, trial_number: int, message: str) -> None:
        self.trial_number = trial_number
        super().__init__(message)


class TrialFailed(TuneforgeError):
    """A trial's run ended failed; the study records it FAIL with this message and goes on."""


def pruning_metric(spec: SearchSpec) -> str:
    """The validation metric reported at every evaluation: the objective itself, else the one going the same way."""
    if spec.objective in VALIDATION_METRICS:
        return spec.objective
    return "validation_accuracy" if spec.direction == "maximize" else "validation_loss"


def trial_data(spec: SearchSpec, data: TrainingData) -> TrainingData:
    """What a trial trains on: the same splits for every trial; its ``test`` is the validation split when the
    objective is an evaluation metric (scored on it), else empty (no evaluation after training)."""
    scored_on_validation = spec.objective not in VALIDATION_METRICS
    return TrainingData(examples=data.examples, validation=data.validation,
                        test=list(data.validation) if scored_on_validation else [], metadata=data.metadata)


def objective_value(spec: SearchSpec, results: dict[str, Any]) -> float:
    """The trial's value from its ``results.json`` content; a ``TrialFailed`` when it is not there."""
    if spec.objective in VALIDATION_METRICS:
        history = (results.get("train") or {}).get("validation_history") or []
        if not history:
            raise TrialFailed("the trial ran no evaluation; set evaluation_strategy to steps or epoch")
        kept = (results.get("train") or {}).get("final_weights_step")
        record = next((r for r in reversed(history) if r.get("step") == kept), history[-1])
        return float(record[spec.objective])
    key = objective_key(spec.objective)
    performance = results.get("tuned") or {}
    if key not in performance:
        raise TrialFailed(f"the tuned evaluation reported no {key!r} (it reported {', '.join(performance) or 'nothing'})")
    return float(performance[key])


@dataclass
class TrialRunner:
    """The objective function ``study.optimize`` calls: one trial, one run directory."""

    spec: SearchSpec
    data: TrainingData  # the prepared splits, the same for every trial
    search_dir: Path
    handle_signals: bool = True
    on_event: SearchEvent | None = None
    keep_checkpoints: bool = False  # a finished trial's checkpoints are removed (its adapter/ stays)

    def __call__(self, trial: Any) -> float:
        import optuna

        params = {name: param.suggest(trial) for name, param in self.spec.space.items()}
        run_dir, resume = self._run_dir(trial)
        for key, value in {**worker_id(), "run_dir": str(run_dir)}.items():
            trial.set_user_attr(key, value)
        self._emit("search.trial_started", trial=trial.number, params=params, run_dir=str(run_dir), resume=resume)
        started = time.perf_counter()
        config = self._config(params, run_dir, resume)
        results = self._finished_results(run_dir) if resume else None
        pruned: list[str] = []
        if results is None:
            results = self._train(trial, config, pruned)
        seconds = round(time.perf_counter() - started, 2)
        if pruned:
            self._clean(run_dir)
            self._emit("search.trial_pruned", trial=trial.number, reason=pruned[0], seconds=seconds)
            raise optuna.TrialPruned(pruned[0])
        status = results.get("status")
        if status == RunStatus.INTERRUPTED:
            raise SearchInterrupted(trial.number, f"trial {trial.number} was stopped ({results.get('error')})")
        if status != RunStatus.SUCCEEDED:
            trial.set_user_attr("error", str(results.get("error")))
            raise TrialFailed(f"trial {trial.number} {status}: {results.get('error')}")
        value = objective_value(self.spec, results)
        self._clean(run_dir)
        self._emit("search.trial_finished", trial=trial.number, value=value, seconds=seconds, params=params)
        return value

    def _run_dir(self, trial: Any) -> tuple[Path, bool]:
        """A retried trial resumes the run directory of the trial it repeats (its user attributes are inherited)."""
        previous = trial.user_attrs.get("run_dir")
        if previous and (Path(previous) / "config.yaml").is_file():
            return Path(previous), True
        return self.search_dir / f"trial-{trial.number:04d}", False

    def _config(self, params: dict[str, Any], run_dir: Path, resume: bool) -> Any:
        fields: dict[str, Any] = {**TRIAL_FIELDS, "output": str(run_dir), "resume": resume}
        metric = objective_metric(self.spec.objective)
        metrics = list(self.spec.base.get("evaluation_metrics") or ["loss"])
        if metric is not None and metric.name not in metrics:
            fields["evaluation_metrics"] = metrics + [metric.name]
        return self.spec.trial_config(params, **fields)

    def _train(self, trial: Any, config: Any, pruned: list[str]) -> dict[str, Any]:
        from tuneforge.pipeline import FineTuningPipeline

        metric = pruning_metric(self.spec)
        pipeline: FineTuningPipeline

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "eval.result" and isinstance(event.get(metric), (int, float)) and not pruned:
                with warnings.catch_warnings():  # a resumed trial reports its earlier steps again: Optuna keeps the first
                    warnings.simplefilter("ignore")
                    trial.report(float(event[metric]), int(event["step"]))
                if trial.should_prune():
                    pruned.append(f"pruned by the {self.spec.pruner.get('type')} pruner at step {event['step']}: "
                                  f"{metric} {float(event[metric]):.4g}")
                    pipeline.request_stop(pruned[0])
            if self.on_event is not None:
                self.on_event({**event, "trial": trial.number})

        pipeline = FineTuningPipeline(config, on_event=on_event, handle_signals=self.handle_signals)
        try:
            return pipeline.train(trial_data(self.spec, self.data)).to_dict()
        except TuneforgeError as error:  # bad values for this trial (a diverging rate ...): the trial fails, the search goes on
            trial.set_user_attr("error", str(error))
            raise TrialFailed(f"trial {trial.number} failed: {error}") from None

    @staticmethod
    def _finished_results(run_dir: Path) -> dict[str, Any] | None:
        """The results of a run that finished before its process was killed (nothing left to resume)."""
        from tuneforge.runs import read_results

        try:
            results = read_results(run_dir)
        except (TuneforgeError, OSError, ValueError):
            return None
        return results if results.get("status") == RunStatus.SUCCEEDED else None

    def _clean(self, run_dir: Path) -> None:
        if not self.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)

    def _emit(self, type_: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event({"type": type_, **fields})
