"""``run_search``: a hyperparameter search end to end, what ``tuneforge search`` and a search job call.

    SEARCH_DIR/study.db            the Optuna study (default storage; --storage names another)
    SEARCH_DIR/trial-NNNN/         one ordinary run directory per trial (tuneforge report/monitor/resume work on it)
    SEARCH_DIR/trials.json         every trial: state, parameters, objective, seconds, run directory
    SEARCH_DIR/best_config.yaml    the base config with the best parameters: `tuneforge finetune --config` runs it
    SEARCH_DIR/best_test.json      the best trial's adapter scored on the test split (trials never see it)
    SEARCH_DIR/search.html         optimisation history, parameter importances, every trial's curve

Every input problem (search file, data, model) is found before the search directory or the study
is made. Starting the same search again (same ``--output`` or ``--name``) loads its study and runs
only the trials still missing; trials a killed process left behind are retried and resume their
run directories. ``num_trials`` counts finished (complete or pruned) trials over every worker.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.core.errors import ConfigError, DatasetError, TuneforgeError
from tuneforge.core.paths import atomic_write_json, atomic_write_text
from tuneforge.core.status import RunStatus
from tuneforge.data.examples import TrainingData
from tuneforge.search.space import SearchSpec, load_search_file, parse_search
from tuneforge.search.study import (HEARTBEAT_SECONDS, create_study, fail_dead_trials, join_study, retry_trial,
                                    shown_url)
from tuneforge.search.trial import SearchEvent, SearchInterrupted, TrialFailed, TrialRunner

logger = logging.getLogger(__name__)
FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class SearchResult:
    """What a search (or this worker's part of it) ended with; ``to_dict()`` is what ``--json`` prints."""

    search_dir: Path
    study_name: str
    storage: str  # the URL without its password
    status: RunStatus  # succeeded: the study has its trials (or this worker's budget ran out); interrupted by a signal
    objective: str
    direction: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    best_config: Path | None = None
    test: dict[str, Any] | None = None  # the best trial on the test split
    report: Path | None = None
    importances: dict[str, float] = field(default_factory=dict)
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"search_dir": str(self.search_dir), "study_name": self.study_name, "storage": self.storage,
                "status": str(self.status), "objective": self.objective, "direction": self.direction,
                "trials": self.trials, "best": self.best, "best_config": str(self.best_config) if self.best_config else None,
                "test": self.test, "report": str(self.report) if self.report else None,
                "importances": self.importances, "message": self.message}


def load_search(search: SearchSpec | str | Path | dict[str, Any], overrides: dict[str, Any] | None = None) -> SearchSpec:
    """A validated ``SearchSpec`` from a spec, a search YAML path or its content as a mapping."""
    if isinstance(search, SearchSpec):
        return parse_search({**search.to_dict()["base"], "search_space": search.to_dict()["space"],
                             "search_strategy": _strategy_of(search)}, overrides) if overrides else search
    if isinstance(search, dict):
        return parse_search(search, overrides)
    return load_search_file(search, overrides)


def _strategy_of(spec: SearchSpec) -> dict[str, Any]:
    stored = spec.to_dict()
    return {"type": stored["strategy"], **{k: stored[k] for k in ("num_trials", "pruner", "objective", "direction", "seed",
                                                                   "timeout", "enqueue") if stored[k] not in (None, [])}}


def run_search(search: SearchSpec | str | Path | dict[str, Any] | None = None, *, output: str | Path | None = None,
               name: str | None = None, storage: str | None = None, join: str | None = None,
               num_trials: int | None = None, timeout: float | None = None, seed: int | None = None,
               overrides: dict[str, Any] | None = None, on_event: SearchEvent | None = None, handle_signals: bool = True,
               heartbeat_seconds: int = HEARTBEAT_SECONDS, keep_checkpoints: bool = False) -> SearchResult:
    """Run a search (or, with ``join=NAME``, add a worker to the existing study NAME in ``storage``).

    ``search``: a ``SearchSpec``, a search YAML path or its mapping; ``overrides`` replace its keys
    (config fields such as ``data`` or ``model``, strategy keys such as ``pruner``). ``num_trials``
    (finished trials the study is to reach), ``timeout`` (seconds for this call) and ``seed`` (the
    sampler's) override the file's. The study defaults to ``sqlite:///SEARCH_DIR/study.db``, the
    search directory to ``output``, else ``runs/NAME``. Raises ``TuneforgeError`` subclasses on bad
    input, before anything is written.
    """
    strategy_overrides = {"num_trials": num_trials, "timeout": timeout, "seed": seed}
    if join:
        spec, study_dir = _joined(join, storage, output, heartbeat_seconds)
        # a timeout is each worker's own: the first worker's does not bind the ones that join
        spec = _override(_override(spec, {"timeout": None}, keep_none=True), strategy_overrides)
        name = join
    else:
        if search is None:
            raise ConfigError(["search: give a search file (--config search.yaml), or --join NAME to join a study"])
        spec = load_search(search, {**(overrides or {}), **strategy_overrides})
        name = name or (Path(output).name if output else None) or f"search-{time.strftime('%Y%m%d-%H%M%S')}"
        study_dir = Path(output) if output else Path("runs") / name
    study_dir = study_dir.resolve()
    data = _prepare(spec)
    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{study_dir / 'study.db'}"
    with _optuna_quiet():
        study = create_study(spec, name, url, str(study_dir), heartbeat_seconds)
    _reseed(study, spec, joined=bool(join))
    for number in fail_dead_trials(study):
        _emit(on_event, "search.trial_retried", trial=number, reason="its process is gone")
    runner = TrialRunner(spec, data, study_dir, handle_signals, on_event, keep_checkpoints)
    status, message = _optimize(study, spec, runner, on_event)
    return finish_search(study, spec, data, study_dir, url, status, message, on_event)


def _reseed(study: Any, spec: SearchSpec, joined: bool = False) -> None:
    """A second worker or a restart must not replay the first one's seeded proposals.

    A restart's sampler seed is the search's seed plus the trials already in the study, so a search
    stopped and continued by one worker stays reproducible. A worker that joins (``--join``) also mixes in
    its process id: workers started together see the same number of trials and would otherwise share a
    seed (their trial order is a race anyway). No seed in the search: random, as Optuna's default.
    """
    from dataclasses import replace

    from tuneforge.search.study import make_sampler

    if spec.strategy == "grid" or spec.seed is None:  # the grid sampler skips the points the study has tried
        return
    existing = len(study.get_trials(deepcopy=False))
    if existing or joined:
        seed = spec.seed + existing + (1_000_003 * os.getpid() if joined else 0)
        study.sampler = make_sampler(replace(spec, seed=seed % 2**32))


def _joined(name: str, storage: str | None, output: str | Path | None, heartbeat_seconds: int) -> tuple[SearchSpec, Path]:
    """The search of study ``name``; trials go to ``output``, else where the first worker put them."""
    from tuneforge.search.study import SearchError

    if storage is None:
        guess = Path(output) if output else Path("runs") / name
        if not (guess / "study.db").is_file():
            raise SearchError(f"--join {name}: no study at {guess / 'study.db'}; give --storage URL (the one the "
                              "search was started with) or --output SEARCH_DIR")
        storage = f"sqlite:///{guess.resolve() / 'study.db'}"
    _, spec, first_dir = join_study(name, storage, heartbeat_seconds)
    return spec, Path(output) if output else Path(first_dir or Path("runs") / name)


def _override(spec: SearchSpec, values: dict[str, Any], keep_none: bool = False) -> SearchSpec:
    from dataclasses import replace

    given = {k: v for k, v in values.items() if keep_none or v is not None}
    return replace(spec, **given) if given else spec


def _prepare(spec: SearchSpec) -> TrainingData:
    """The splits every trial trains on, prepared once; the model checked to exist. Nothing is written."""
    from tuneforge.model.resolve import resolve_model
    from tuneforge.pipeline import FineTuningPipeline

    config = spec.base_config()
    data = FineTuningPipeline(config, handle_signals=False).prepare_data()
    if not data.validation:
        raise DatasetError("a search scores trials on the validation split, and there is none: give --validation-data "
                           "or a validation_split above 0")
    resolve_model(config.model)
    return data


def _optimize(study: Any, spec: SearchSpec, runner: TrialRunner, on_event: SearchEvent | None) -> tuple[RunStatus, str | None]:
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    wanted = spec.trials_wanted
    missing = wanted - len(study.get_trials(deepcopy=False, states=finished))
    if missing <= 0:
        return RunStatus.SUCCEEDED, f"the study already has its {wanted} finished trials"
    _emit(on_event, "search.started", study=study.study_name, missing=missing, wanted=wanted)
    try:
        with _optuna_quiet():
            study.optimize(runner, n_trials=missing, timeout=spec.timeout, catch=(TuneforgeError,), gc_after_trial=True,
                           callbacks=[MaxTrialsCallback(wanted, states=finished)])
    except (SearchInterrupted, KeyboardInterrupt) as stop:
        # the trial in progress is FAIL now; enqueue it again, so the next start resumes its run directory
        number = stop.trial_number if isinstance(stop, SearchInterrupted) else _last_failed(study)
        if number is not None:
            retry_trial(study, number, "the search was interrupted")
        return RunStatus.INTERRUPTED, (f"the search was interrupted during trial {number}; start it again with the same "
                                       "command to continue (the trial resumes from its checkpoint)")
    return RunStatus.SUCCEEDED, None


def _last_failed(study: Any) -> int | None:
    from optuna.trial import TrialState

    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return failed[-1].number if failed else None


class _optuna_quiet:
    """Optuna's INFO lines (one per trial) stay off the terminal; tuneforge reports trials itself."""

    def __enter__(self) -> None:
        import optuna

        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        import optuna

        optuna.logging.set_verbosity(self.level)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, parameters, value, seconds, run directory, last step, error."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = None
        if trial.datetime_start and trial.datetime_complete:
            seconds = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2)
        steps = sorted(trial.intermediate_values)
        rows.append({"number": trial.number, "state": trial.state.name, "params": dict(trial.params), "value": trial.value,
                     "seconds": seconds, "run_dir": trial.user_attrs.get("run_dir"),
                     "last_step": steps[-1] if steps else None, "error": trial.user_attrs.get("error"),
                     "retry_of": trial.system_attrs.get("failed_trial"), "worker": _worker(trial)})
    return rows


def _worker(trial: Any) -> str | None:
    host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
    return f"{host}:{pid}" if host else None


def finish_search(study: Any, spec: SearchSpec, data: TrainingData, search_dir: Path, url: str, status: RunStatus,
                  message: str | None, on_event: SearchEvent | None = None) -> SearchResult:
    """Write trials.json, best_config.yaml, best_test.json and search.html from the study as it is now."""
    from tuneforge.search.report import parameter_importances, write_search_report

    rows = trial_rows(study)
    result = SearchResult(search_dir=search_dir, study_name=study.study_name, storage=shown_url(url), status=status,
                          objective=spec.objective, direction=spec.direction, trials=rows, message=message)
    best = _best_row(study, rows)
    if best is not None:
        result.best = best
        result.best_config = write_best_config(spec, best["params"], search_dir / "best_config.yaml")
        if status != RunStatus.INTERRUPTED:  # after Ctrl-C, stop soon: the test score waits for the next start
            _emit(on_event, "search.testing", trial=best["number"], examples=len(data.test))
            result.test = best_on_test(spec, data, best, search_dir / "best_test.json")
    result.importances = parameter_importances(study)
    atomic_write_json(search_dir / "trials.json", {"objective": spec.objective, "direction": spec.direction,
                                                   "trials": rows, "best": result.best})
    result.report = write_search_report(study, spec, result, search_dir / "search.html")
    return result


def _best_row(study: Any, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        number = study.best_trial.number
    except ValueError:  # no complete trial yet
        return None
    return next(row for row in rows if row["number"] == number)


def write_best_config(spec: SearchSpec, params: dict[str, Any], path: Path) -> Path:
    """The base config with the best parameters, as YAML that ``tuneforge finetune --config`` runs (a fresh output)."""
    config = spec.trial_config(params, output=None, name=None, resume=False)
    header = f"# the best trial of a tuneforge search ({', '.join(f'{k}={v}' for k, v in params.items())})\n"
    atomic_write_text(path, header + config.to_yaml())
    return path


def best_on_test(spec: SearchSpec, data: TrainingData, best: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The best trial's trained model scored on the test split, once per best trial (kept in ``path``)."""
    if not data.test or not best.get("run_dir"):
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded.get("trial") == best["number"]:
            return recorded
    except (OSError, ValueError):
        pass
    from tuneforge.evaluate.run import evaluate_model
    from tuneforge.pipeline import label_space
    from tuneforge.runs import load_trained

    config = spec.base_config().concrete()  # no auto left for the scoring (max_length, batch_size)
    test = data.test[: config.max_eval_examples] if config.max_eval_examples else data.test
    try:
        model, tokenizer, description = load_trained(best["run_dir"])
    except (TuneforgeError, OSError) as error:  # another machine's trial: its run directory is not here
        logger.warning("cannot score the best trial on the test split: %s", error)
        return None
    evaluation = evaluate_model(model, tokenizer, test, max_length=config.max_length, batch_size=config.batch_size,
                                max_new_tokens=config.max_new_tokens, metrics=config.evaluation_metrics,
                                labels=label_space(data))
    scored = {"trial": best["number"], "run_dir": best["run_dir"], "params": best["params"], "model": description,
              "examples": len(test), "performance": evaluation.performance, "task": evaluation.task}
    atomic_write_json(path, scored)
    return scored


def _emit(on_event: SearchEvent | None, type_: str, **fields: Any) -> None:
    if on_event is not None:
        on_event({"type": type_, **fields})
