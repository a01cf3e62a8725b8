"""The Optuna study behind a search: its storage, sampler and pruner, and what happens to trials whose process died.

A study lives in an Optuna RDB storage: SQLite beside the trials by default
(``sqlite:///SEARCH_DIR/study.db``), PostgreSQL when several machines share it. The search itself
(``SearchSpec.to_dict()``) is stored in the study's user attributes, so ``--join NAME --storage URL``
needs nothing else, and a second start of the same search finds the same study (``load_if_exists``)
and continues it.

A trial whose process was killed stays RUNNING in the storage. Two things end it, both through
Optuna's ``RetryHeartbeatStaleTrialCallback`` (which enqueues a new trial with the same parameters
and keeps the killed one's intermediate values): every trial's process records a heartbeat, and any
worker fails trials whose heartbeat is older than the grace period (Optuna's ``fail_stale_trials``,
run before each trial); and a worker starting on the same machine fails at once the RUNNING trials
whose recorded process is gone. The retry then resumes the killed trial's run directory from its
newest checkpoint (see ``trial.py``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from tuneforge.core.errors import ConfigError, TuneforgeError
from tuneforge.search.space import SearchSpec

SPEC_ATTR = "tuneforge.search"  # the study user attribute holding SearchSpec.to_dict()
DIR_ATTR = "tuneforge.search_dir"  # where the first worker put the trials
HEARTBEAT_SECONDS = 30  # how often a running trial says it is alive
MAX_RETRIES = 3  # a trial killed more often than this is left failed
logger = logging.getLogger(__name__)


class SearchError(TuneforgeError):
    """The study cannot be created, found or joined; the message says which and what to do."""


def storage_url(url: str) -> str:
    """``url`` as SQLAlchemy takes it: a bare ``postgresql://`` uses psycopg 3 (the driver tuneforge installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def shown_url(url: str) -> str:
    """``url`` without its password, for messages and the report."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: show its scheme only
        return url.split("://", 1)[0] + "://…"


def open_storage(url: str, heartbeat_seconds: int = HEARTBEAT_SECONDS) -> Any:
    """An ``optuna.storages.RDBStorage`` with heartbeats and retries of killed trials."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    url = storage_url(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds,
                              grace_period=3 * heartbeat_seconds,
                              heartbeat_stale_trial_callback=retry_callback())
    except Exception as error:  # a wrong URL, a server that is down, a missing driver
        raise SearchError(f"cannot open the study storage {shown_url(url)}: {' '.join(str(error).split())[:300]}; "
                          "check --storage (sqlite:///PATH/study.db or postgresql+psycopg://USER:PASSWORD@HOST/DB)") from None


def retry_callback() -> Any:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES, inherit_intermediate_values=True)


def make_sampler(spec: SearchSpec) -> Any:
    """Optuna's sampler for ``spec.strategy``, seeded by ``spec.seed``."""
    import optuna

    if spec.strategy == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.strategy == "grid":
        return optuna.samplers.GridSampler({name: p.grid_values() for name, p in spec.space.items()}, seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def make_pruner(spec: SearchSpec) -> Any:
    """Optuna's pruner for ``spec.pruner`` (median: Optuna's defaults unless the search file sets them)."""
    import optuna

    options = {k: v for k, v in spec.pruner.items() if k != "type"}
    kind = spec.pruner.get("type", "none")
    if kind == "median":
        return optuna.pruners.MedianPruner(**options)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**options)
    return optuna.pruners.NopPruner()


def create_study(spec: SearchSpec, name: str, url: str, search_dir: str, heartbeat_seconds: int = HEARTBEAT_SECONDS) -> Any:
    """The study ``name`` in ``url``: created (with the search stored in it), or loaded when it holds this very search."""
    import optuna

    storage = open_storage(url, heartbeat_seconds)
    existing = _stored_spec(storage, name)
    study = optuna.create_study(storage=storage, study_name=name, direction=spec.direction, sampler=make_sampler(spec),
                                pruner=make_pruner(spec), load_if_exists=True)
    if existing is None:
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
        study.set_user_attr(DIR_ATTR, search_dir)
        for params in spec.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
        return study
    differences = existing.same_search(spec)
    if differences:
        raise ConfigError([f"study {name!r} in {shown_url(url)} holds another search ({', '.join(differences)} differ); "
                           "continue it with the same search file, or start a new one with another --name or --output"])
    return study


def join_study(name: str, url: str, heartbeat_seconds: int = HEARTBEAT_SECONDS) -> tuple[Any, SearchSpec, str | None]:
    """(study, its search, the first worker's search directory) of an existing tuneforge study."""
    import optuna

    storage = open_storage(url, heartbeat_seconds)
    spec = _stored_spec(storage, name)
    if spec is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise SearchError(f"no tuneforge search named {name!r} in {shown_url(url)}; "
                          f"studies there: {', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec), pruner=make_pruner(spec))
    return study, spec, study.user_attrs.get(DIR_ATTR)


def _stored_spec(storage: Any, name: str) -> SearchSpec | None:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    stored = storage.get_study_user_attrs(study_id).get(SPEC_ATTR)
    if not isinstance(stored, dict):
        raise SearchError(f"study {name!r} exists but was not made by tuneforge search; choose another --name") from None
    try:
        return SearchSpec.from_dict(stored)
    except (TypeError, KeyError, ValueError) as error:
        raise SearchError(f"study {name!r} holds a search this tuneforge cannot read ({error})") from None


def worker_id() -> dict[str, Any]:
    """Who runs a trial: recorded on it, so a restart on this machine can tell a dead trial from a live one."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def fail_dead_trials(study: Any) -> list[int]:
    """Fail (and enqueue again) the RUNNING trials this machine's killed processes left; their numbers."""
    from optuna.trial import TrialState

    from tuneforge.runs import process_alive

    me = worker_id()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
        if host != me["host"] or not isinstance(pid, int) or pid == me["pid"] or process_alive(pid):
            continue
        retry_trial(study, trial.number, f"its process {pid} is gone")
        failed.append(trial.number)
    return failed


def retry_trial(study: Any, number: int, reason: str) -> None:
    """Mark trial ``number`` failed with ``reason`` and enqueue its parameters again (it then resumes its run).

    A trial already failed (``study.optimize`` marks the trial a signal stopped) is enqueued again too,
    once: a trial that some retry already repeats is left alone.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    trial = trials[number]
    if any(number in other.system_attrs.get("retry_history", []) for other in trials):
        return
    if trial.state == TrialState.RUNNING:
        try:
            study.tell(number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another worker finished it first
            return
    elif trial.state != TrialState.FAIL:
        return
    logger.warning("search trial %d failed: %s; it is tried again and resumes its run directory", number, reason)
    retry_callback()(study, study.get_trials(deepcopy=True)[number])
