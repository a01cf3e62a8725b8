"""``FineTuningManager``: the one library behind ``tuneforge jobs``, ``tuneforge worker`` and the server.

Files, jobs, events, checkpoints and models, with OpenAI's fine-tuning semantics:

    manager = FineTuningManager()                       # SQLite under $TUNEFORGE_HOME; or database_url=...
    file = manager.upload_file(open("train.jsonl", "rb"), "train.jsonl")
    job = manager.create_job(file.id, model="smollm2-135m-instruct", hyperparameters={"n_epochs": 2}, suffix="mine")
    Worker(manager).run()                               # or `tuneforge worker`: trains queued jobs
    manager.get_job(job.id).fine_tuned_model            # "ft:smollm2-135m-instruct:mine:ftjob-..."
    base, adapter = manager.resolve_model(that)         # what the server loads to serve it

Job states and their moves (cancel, pause, resume) are in transitions.py; a request's checks in
requests.py; the models a store serves in models.py; a job's progress, events and checkpoints in
progress.py. ``FineTuningManager`` is all of them over one store. Errors are
``NotFound`` / ``InvalidRequest`` (with ``param``) / ``Conflict`` / ``PayloadTooLarge`` from
``tuneforge.jobs.errors``, each with the ``http_status`` the server answers with.

Every method is safe to call from several threads and processes at once (the store's conditional
updates decide races); nothing here trains: a ``Worker`` runs each job in its own process.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from tuneforge.core.errors import ConfigError
from tuneforge.core.paths import tuneforge_home
from tuneforge.core.status import RunStatus
from tuneforge.jobs import ids
from tuneforge.jobs.errors import Conflict, InvalidRequest, NotFound
from tuneforge.jobs.files import DEFAULT_MAX_BYTES, FileStore, _check_limit
from tuneforge.jobs.models import JobModels, ResolvedModel, is_store_model_id
from tuneforge.jobs.objects import Page, StoredFile, TrainingJob, paginate
from tuneforge.jobs.progress import JobProgress, not_found_after
from tuneforge.jobs.requests import (HYPERPARAMETER_FIELDS, JOB_DEFAULTS, MAX_SEED, METHOD_HYPERPARAMETERS, METHOD_OBJECTIVES,
                                     PREFERENCE_FORMATS, RESERVED_FIELDS, SUFFIX, check_base_model, check_hyperparameters,
                                     check_seed, check_training_file, epochs_number, job_config, method_type,
                                     objective_fields)
from tuneforge.jobs.store import JobStore
from tuneforge.jobs.transitions import ACTIVE, JobTransitions

__all__ = ["ACTIVE", "HYPERPARAMETER_FIELDS", "JOB_DEFAULTS", "MAX_SEED", "METHOD_HYPERPARAMETERS", "METHOD_OBJECTIVES",
           "PREFERENCE_FORMATS", "RESERVED_FIELDS", "SUFFIX", "FineTuningManager", "ResolvedModel", "is_store_model_id"]

S = RunStatus


class FineTuningManager(JobTransitions, JobProgress, JobModels):
    """Files, jobs, events, checkpoints and models in one store (see the module docstring).

    Args:
        database_url: any SQLAlchemy URL; default ``sqlite:///$TUNEFORGE_HOME/jobs.db``. Workers on
            several machines share a queue through one PostgreSQL URL (``postgresql+psycopg://...``).
        home: where files and job run directories go (default ``$TUNEFORGE_HOME``); on several machines
            it must be the same shared directory on each.
        max_upload_bytes: the size limit of one uploaded file.
        max_retries: how often a job whose process dies is continued from its last checkpoint.
    """

    def __init__(self, database_url: str | None = None, home: str | Path | None = None,
                 max_upload_bytes: int = DEFAULT_MAX_BYTES, max_retries: int = 3) -> None:
        self.home = Path(home).expanduser().resolve() if home else tuneforge_home().expanduser().resolve()
        self.database_url = database_url or f"sqlite:///{self.home / 'jobs.db'}"
        self.store = JobStore(self.database_url)
        self.files = FileStore(self.store, self.home / "files", max_upload_bytes)
        self.runs_dir = self.home / "jobs"
        self.max_retries = max_retries

    # --- data ----------------------------------------------------------------------------------
    def validate_data(self, data: str | Path, **options: Any) -> Any:
        """The data doctor's ``ValidationReport`` for a path or an uploaded file id (``options``: ``ValidationOptions``)."""
        from tuneforge.data.validate import ValidationOptions, validate_data

        return validate_data(self._data_path(data), ValidationOptions(**options))

    def prepare_data(self, data: str | Path, validation_data: str | Path | None = None, test_data: str | Path | None = None,
                     validation_split: float = 0.1, test_split: float = 0.0, seed: int = 42, data_format: str = "auto",
                     skip_invalid: bool = False) -> Any:
        """``TrainingData`` (train/validation/test examples) from paths or uploaded file ids, as training prepares it."""
        from tuneforge.data.manager import TrainingDataManager

        return TrainingDataManager(data_format).prepare_data(
            self._data_path(data), self._data_path(validation_data) if validation_data else None,
            self._data_path(test_data) if test_data else None, validation_split, test_split, seed, skip_invalid=skip_invalid)

    # --- files ---------------------------------------------------------------------------------
    def upload_file(self, content: bytes | IO[bytes], filename: str, purpose: str = "fine-tune",
                    expires_after_seconds: int | None = None) -> StoredFile:
        """Store an upload and check it with the data doctor; its findings are on the returned file (see ``FileStore.upload``)."""
        return self.files.upload(content, filename, purpose, expires_after_seconds)

    def list_files(self, after: str | None = None, limit: int = 10000, order: str = "desc",
                   purpose: str | None = None) -> Page[StoredFile]:
        return self.files.list(after, limit, order, purpose)

    def get_file(self, file_id: str) -> StoredFile:
        return self.files.get(file_id)

    def file_content(self, file_id: str) -> bytes:
        return self.files.content(file_id)

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete an uploaded file; ``Conflict`` while a job that has not started training yet still needs it."""
        self.files.get(file_id)
        waiting = [job["id"] for job in self.store.list_jobs()
                   if file_id in (job["training_file"], job["validation_file"])
                   and job["status"] in (S.VALIDATING_FILES, S.QUEUED, S.RUNNING, S.INTERRUPTED)
                   and not (Path(job["run_dir"]) / "data" / "manifest.json").is_file()]
        if waiting:
            raise Conflict(f"cannot delete {file_id}: job {waiting[0]} has not read it yet; cancel the job first, "
                           "or wait until it is training", param="file_id")
        return self.files.delete(file_id)

    # --- jobs (their state moves: transitions.py; their progress: progress.py) -----------------
    def create_job(self, training_file: str, model: str | None = None, validation_file: str | None = None,
                   hyperparameters: dict[str, Any] | None = None, suffix: str | None = None, seed: int | None = None,
                   method: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                   metadata: dict[str, str] | None = None) -> TrainingJob:
        """Create a fine-tuning job from uploaded files and queue it; returns it (status ``queued``).

        ``hyperparameters`` (or ``method={"type": "supervised", "supervised": {"hyperparameters": ...}}``,
        which wins): ``n_epochs``, ``batch_size``, ``learning_rate_multiplier`` (× the training method's
        default rate), each a number or ``"auto"``. ``extra``: tuneforge's own ``FineTuningConfig``
        fields (``method``, ``lora_r``, ``max_length``, ...), validated like a config file.

        Raises ``InvalidRequest`` with ``param`` for a missing or unusable file (one the data doctor
        found errors in: the message lists them with line numbers), a bad hyperparameter, suffix,
        seed, method or extra field, or a model that cannot be found.
        """
        from tuneforge.config import DEFAULT_MODEL

        train = check_training_file(self.files, training_file, "training_file")
        validation = check_training_file(self.files, validation_file, "validation_file") if validation_file else None
        model = check_base_model(self.store, model or DEFAULT_MODEL)
        hyper = check_hyperparameters(hyperparameters, method)
        kind = method_type(method)
        if kind == "dpo" and (train.summary or {}).get("format") not in PREFERENCE_FORMATS:
            raise InvalidRequest(f"training_file: a dpo job trains on preference pairs, and {train.id} ({train.filename}) "
                                 f"holds {(train.summary or {}).get('format')} rows; upload rows like {{\"input\": "
                                 "{\"messages\": [...]}, \"preferred_output\": [...], \"non_preferred_output\": [...]}",
                                 param="training_file", code="invalid_training_file")
        seed = check_seed(seed)
        if suffix is not None and not SUFFIX.match(str(suffix)):
            raise InvalidRequest("suffix must be 1-64 characters of letters, digits, '.', '_' or '-'", param="suffix")
        job_id = ids.new_id(ids.JOB_PREFIX)
        run_dir = self.runs_dir / job_id
        values = {"data": str(train.path), "validation_data": str(validation.path) if validation else None,
                  "model": model, "seed": seed, "output": str(run_dir), "name": job_id,
                  **objective_fields(kind, hyper, extra)}
        config, resolved = job_config(values, hyper, extra)
        return self._queue(job_id, model, config, resolved, train.id, validation.id if validation else None,
                           suffix, seed, metadata, kind)

    def start_training(self, config: Any) -> TrainingJob:
        """Queue a job for a tuneforge ``FineTuningConfig`` (or its values) whose ``data`` is a local path.

        The run directory is ``config.output`` when set, else ``$TUNEFORGE_HOME/jobs/<job-id>``. The
        job's ``training_file`` / ``validation_file`` are then the paths themselves.
        """
        from tuneforge.config import FineTuningConfig, make_config
        from tuneforge.pipeline import with_absolute_paths

        if not isinstance(config, FineTuningConfig):
            config = make_config(dict(config))
        if not config.data:
            raise InvalidRequest("the config has no data; set data: FILE", param="data")
        if config.resume:
            raise InvalidRequest("start_training starts a new run; resume a job with resume(job_id)", param="resume")
        job_id = ids.new_id(ids.JOB_PREFIX)
        config = with_absolute_paths(config.model_copy(update={"output": config.output or str(self.runs_dir / job_id)}))
        values = {**config.model_dump(mode="json", exclude_unset=True), "model": config.model, "output": config.output,
                  "seed": config.seed}
        hyper = {"n_epochs": epochs_number(config.epochs), "batch_size": config.batch_size, "learning_rate_multiplier": 1.0}
        kind = next((kind for kind, objective in METHOD_OBJECTIVES.items() if objective == config.objective), "supervised")
        return self._queue(job_id, config.model, values, hyper, str(config.data), config.validation_data, None,
                           config.seed, None, kind)

    def start_search(self, search: Any, output: str | Path | None = None) -> TrainingJob:
        """Queue a hyperparameter search as a job: a search file path, its mapping or a ``SearchSpec``.

        A worker runs it with ``tuneforge.search.run_search`` in ``output`` (default
        ``$TUNEFORGE_HOME/jobs/<job-id>``): the study is ``study.db`` there, named after the job, the
        trials are run directories beside it, each trial an event of the job. Cancel and pause stop the
        running trial at a checkpoint; resume (or a killed process) continues the search where it stopped.
        The job's ``method`` is ``{"type": "search", "search": {...}}``; it registers no fine-tuned model
        (train ``best_config.yaml`` for that).
        """
        from tuneforge.search.run import load_search

        try:
            spec = load_search(search)
        except ConfigError as error:
            raise InvalidRequest(str(error), param="search") from None
        config = spec.base_config()
        if not config.data:
            raise InvalidRequest("the search has no data; set data: FILE in the search file", param="data")
        job_id = ids.new_id(ids.JOB_PREFIX)
        run_dir = str(Path(output).expanduser().resolve()) if output else str(self.runs_dir / job_id)
        values = {**spec.base, "output": run_dir}
        hyper = {"n_epochs": epochs_number(config.epochs), "batch_size": config.batch_size, "learning_rate_multiplier": 1.0}
        kind = {"type": "search", "search": {"spec": spec.to_dict(), "num_trials": spec.trials_wanted,
                                             "objective": spec.objective, "direction": spec.direction}}
        return self._queue(job_id, config.model, values, hyper, str(config.data), config.validation_data, None,
                           config.seed, None, kind=kind)

    def list_jobs(self, after: str | None = None, limit: int = 20, metadata: dict[str, str] | None = None) -> Page[TrainingJob]:
        """A page of jobs, newest first, strictly after the job ``after``; ``metadata`` keeps jobs with those pairs."""
        _check_limit(limit, 100)
        jobs = [TrainingJob.from_row(row) for row in self.store.list_jobs()]
        if metadata:
            jobs = [job for job in jobs if all((job.metadata or {}).get(k) == v for k, v in metadata.items())]
        return paginate(jobs, after, limit, key=lambda job: job.id, not_found=not_found_after("fine-tuning job"))

    def get_job(self, job_id: str) -> TrainingJob:
        """The job; ``NotFound`` (``param="fine_tuning_job_id"``) when there is none."""
        ids.check_id(job_id, ids.JOB_PREFIX)
        row = self.store.get_job(job_id)
        if row is None:
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="fine_tuning_job_not_found")
        return TrainingJob.from_row(row)

    # --- internals -----------------------------------------------------------------------------
    def _data_path(self, data: str | Path) -> Path:
        if isinstance(data, str) and ids.is_valid(data, ids.FILE_PREFIX):
            return self.files.get(data).path
        return Path(data)
