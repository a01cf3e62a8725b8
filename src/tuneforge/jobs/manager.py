"""``FineTuningManager``: the one library behind ``tuneforge jobs``, ``tuneforge worker`` and the server.

Files, jobs, events, checkpoints and models, with OpenAI's fine-tuning semantics:

    manager = FineTuningManager()                       # SQLite under $TUNEFORGE_HOME; or database_url=...
    file = manager.upload_file(open("train.jsonl", "rb"), "train.jsonl")
    job = manager.create_job(file.id, model="smollm2-135m-instruct", hyperparameters={"n_epochs": 2}, suffix="mine")
    Worker(manager).run()                               # or `tuneforge worker`: trains queued jobs
    manager.get_job(job.id).fine_tuned_model            # "ft:smollm2-135m-instruct:mine:ftjob-..."
    base, adapter = manager.resolve_model(that)         # what the server loads to serve it

Job states: validating_files → queued → running → succeeded | failed | cancelled; ``pause`` moves a
running or queued job to ``interrupted`` (OpenAI's ``paused``: stopped at a step boundary with a
checkpoint) and ``resume`` queues it again, to continue exactly from that checkpoint. Errors are
``NotFound`` / ``InvalidRequest`` (with ``param``) / ``Conflict`` / ``PayloadTooLarge`` from
``tuneforge.jobs.errors``, each with the ``http_status`` the server answers with.

Every method is safe to call from several threads and processes at once (the store's conditional
updates decide races); nothing here trains: a ``Worker`` runs each job in its own process.
"""

from __future__ import annotations

import math
import random
import re
import time
from pathlib import Path
from typing import IO, Any, NamedTuple, Sequence

from tuneforge.core.errors import ConfigError, ModelNotFoundError, TuneforgeError
from tuneforge.core.paths import tuneforge_home
from tuneforge.core.status import RunStatus
from tuneforge.jobs import ids
from tuneforge.jobs.errors import Conflict, InvalidRequest, NotFound
from tuneforge.jobs.files import DEFAULT_MAX_BYTES, FileStore, _check_limit
from tuneforge.jobs.objects import ORGANIZATION, Page, StoredFile, TrainingJob, TrainingStatus, paginate, wire_status
from tuneforge.jobs.store import JobStore

S = RunStatus
ACTIVE = (S.VALIDATING_FILES, S.QUEUED, S.RUNNING)
# FineTuningConfig fields a request may not set through ``extra``: the job decides where data and
# output are, and remote code is never enabled from a request.
RESERVED_FIELDS = {"data": "training_file", "validation_data": "validation_file", "test_data": None,
                   "output": None, "resume": None, "trust_remote_code": None, "model": "model", "seed": "seed",
                   "name": None}
HYPERPARAMETER_FIELDS = {"n_epochs": "epochs", "batch_size": "batch_size", "learning_rate_multiplier": "learning_rate"}
# OpenAI's job ``method.type`` -> the tuneforge objective it trains with, and the method's own hyperparameters
# (beyond HYPERPARAMETER_FIELDS) -> (config field, low, high): DPO's beta is "auto" or a number in (0, 2].
METHOD_OBJECTIVES = {"supervised": "sft", "dpo": "dpo"}
METHOD_HYPERPARAMETERS = {"dpo": {"beta": ("dpo_beta", 0.0, 2.0)}}
PREFERENCE_FORMATS = ("preference", "openai_preference")
SUFFIX = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")
MAX_SEED = 2**31 - 1
JOB_DEFAULTS = {"test_split": 0.0}  # a job trains on all it is given; the validation split still applies


class ResolvedModel(NamedTuple):
    """What serving a model id loads: the base (a name or path for ``resolve_model``) and the trained weights."""

    base: str
    weights: Path | None  # an adapter / model directory (the job's output or a checkpoint's weights), None for a base


class FineTuningManager:
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

    # --- jobs ----------------------------------------------------------------------------------
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

        train = self._training_file(training_file, "training_file")
        validation = self._training_file(validation_file, "validation_file") if validation_file else None
        model = self._check_model(model or DEFAULT_MODEL)
        hyper = _hyperparameters(hyperparameters, method)
        kind = _method_type(method)
        if kind == "dpo" and (train.summary or {}).get("format") not in PREFERENCE_FORMATS:
            raise InvalidRequest(f"training_file: a dpo job trains on preference pairs, and {train.id} ({train.filename}) "
                                 f"holds {(train.summary or {}).get('format')} rows; upload rows like {{\"input\": "
                                 "{\"messages\": [...]}, \"preferred_output\": [...], \"non_preferred_output\": [...]}",
                                 param="training_file", code="invalid_training_file")
        seed = _check_seed(seed)
        if suffix is not None and not SUFFIX.match(str(suffix)):
            raise InvalidRequest("suffix must be 1-64 characters of letters, digits, '.', '_' or '-'", param="suffix")
        job_id = ids.new_id(ids.JOB_PREFIX)
        run_dir = self.runs_dir / job_id
        values = {"data": str(train.path), "validation_data": str(validation.path) if validation else None,
                  "model": model, "seed": seed, "output": str(run_dir), "name": job_id,
                  **_objective_fields(kind, hyper, extra)}
        config, resolved = self._job_config(values, hyper, extra)
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
        hyper = {"n_epochs": _number(config.epochs), "batch_size": config.batch_size, "learning_rate_multiplier": 1.0}
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
        hyper = {"n_epochs": _number(config.epochs), "batch_size": config.batch_size, "learning_rate_multiplier": 1.0}
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
        return paginate(jobs, after, limit, key=lambda job: job.id, not_found=_not_found_after("fine-tuning job"))

    def get_job(self, job_id: str) -> TrainingJob:
        """The job; ``NotFound`` (``param="fine_tuning_job_id"``) when there is none."""
        ids.check_id(job_id, ids.JOB_PREFIX)
        row = self.store.get_job(job_id)
        if row is None:
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="fine_tuning_job_not_found")
        return TrainingJob.from_row(row)

    def cancel(self, job_id: str) -> TrainingJob:
        """Cancel a job that has not finished: status ``cancelled`` at once.

        A running job is stopped gracefully by its worker (SIGTERM to the job's process: the step is
        finished and a checkpoint kept). ``Conflict`` for a job that already ended.
        """
        allowed = (*ACTIVE, S.INTERRUPTED)
        return self._transition(job_id, allowed, S.CANCELLED, "cancel", {"finished_at": time.time()},
                                "Fine-tuning job cancelled")

    stop = cancel  # the seed vocabulary's name: stopping a job is cancelling it, keeping its checkpoint

    def pause(self, job_id: str) -> TrainingJob:
        """Pause a running or queued job (status ``interrupted``, OpenAI's ``paused``); its checkpoint is kept.

        ``Conflict`` for a job in any other state. ``resume`` continues it exactly.
        """
        return self._transition(job_id, (S.QUEUED, S.RUNNING, S.VALIDATING_FILES), S.INTERRUPTED, "pause", {},
                                "Fine-tuning job paused; resume continues from its last checkpoint")

    def resume(self, job_id: str) -> TrainingJob:
        """Queue a paused job again (status ``queued``); it continues from its last checkpoint. ``Conflict`` otherwise."""
        return self._transition(job_id, (S.INTERRUPTED,), S.QUEUED, "resume", {"queued_at": time.time()},
                                "Fine-tuning job resumed; queued to continue from its last checkpoint")

    def monitor_progress(self, job_id: str) -> TrainingStatus:
        """Status, step / total steps, epoch, the latest metrics, ETA and detected issues, from the run's events.jsonl."""
        from tuneforge.monitor.events import read_events

        job = self.get_job(job_id)
        status = TrainingStatus(job_id=job.id, status=job.status, error=job.error)
        for event in read_events(job.run_dir / "events.jsonl"):
            kind = event.get("type")
            if kind == "train.started":
                status.total_steps = event.get("total_steps")
            elif kind == "train.estimate" and status.step == 0:
                status.eta_seconds = event.get("seconds")
            elif kind == "train.step":
                status.step = int(event.get("step", 0))
                status.total_steps = event.get("total_steps", status.total_steps)
                status.epoch = event.get("epoch")
                status.metrics.update({k: event[k] for k in ("loss", "accuracy", "perplexity", "learning_rate", "grad_norm",
                                                             "tokens_per_second") if k in event})
                elapsed = event.get("elapsed_seconds")
                if elapsed and status.step and status.total_steps:
                    status.eta_seconds = round(elapsed / status.step * (status.total_steps - status.step), 1)
            elif kind == "eval.result":
                status.metrics.update({k: v for k, v in event.items() if k.startswith("validation_")})
            elif kind == "issue.detected":
                status.issues.append({k: v for k, v in event.items() if k not in ("seq", "type", "time")})
            elif kind == "checkpoint.saved":
                status.checkpoint = event.get("path")
        if job.status != S.RUNNING:
            status.eta_seconds = None if job.status.is_terminal else status.eta_seconds
        return status

    def list_events(self, job_id: str, after: str | None = None, limit: int = 20) -> Page[dict[str, Any]]:
        """A page of the job's ``fine_tuning.job.event`` objects, newest first, strictly after the event ``after``."""
        self.get_job(job_id)
        _check_limit(limit, 1000)
        events = [_event_wire(row) for row in self.store.list_events(job_id)]
        return paginate(events, after, limit, key=lambda e: e["id"], not_found=_not_found_after("event"))

    def list_checkpoints(self, job_id: str, after: str | None = None, limit: int = 10) -> Page[dict[str, Any]]:
        """A page of the job's ``fine_tuning.job.checkpoint`` objects that still exist on disk, newest step first."""
        job = self.get_job(job_id)
        _check_limit(limit, 1000)
        rows = [row for row in self.store.list_checkpoints(job_id) if _checkpoint_exists(job, row)]
        return paginate([_checkpoint_wire(row) for row in rows], after, limit, key=lambda c: c["id"], first_last=True,
                        not_found=_not_found_after("checkpoint"))

    # --- models --------------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        """``model`` objects: the embedded default, every base a job used, every fine-tuned model, every checkpoint."""
        from tuneforge.config import DEFAULT_MODEL

        listed: dict[str, dict[str, Any]] = {DEFAULT_MODEL: _model_wire(DEFAULT_MODEL, 0, "system")}
        fine_tuned_jobs: set[str] = set()
        for row in self.store.list_models():
            listed[row["id"]] = _model_wire(row["id"], row["created"], row["owned_by"])
            if row["kind"] == "fine-tuned" and row["job_id"]:
                fine_tuned_jobs.add(row["job_id"])
        for job_id in fine_tuned_jobs | self._jobs_with_checkpoints():
            job = self.get_job(job_id)
            if self._deleted(job):
                continue
            for row in self.store.list_checkpoints(job_id):
                if _checkpoint_exists(job, row):
                    listed.setdefault(row["fine_tuned_model_checkpoint"],
                                      _model_wire(row["fine_tuned_model_checkpoint"], row["created_at"], ORGANIZATION))
        return list(listed.values())

    def get_model(self, model_id: str) -> dict[str, Any]:
        """One ``model`` object; ``NotFound`` (``code="model_not_found"``) for an id ``list_models`` does not show."""
        for model in self.list_models():
            if model["id"] == model_id:
                return model
        raise _model_not_found(model_id)

    def delete_model(self, model_id: str) -> dict[str, Any]:
        """Delete a fine-tuned model (and with it its checkpoints' models); the run directory stays on disk.

        ``InvalidRequest`` for a base model or a checkpoint, ``NotFound`` for an unknown id.
        """
        row = self.store.get_model(model_id)
        if row is None or row["deleted"]:
            self.get_model(model_id)  # raises NotFound unless it is a checkpoint or the default
            raise InvalidRequest(f"only fine-tuned models can be deleted; {model_id!r} is not one", param="model")
        if row["kind"] != "fine-tuned":
            raise InvalidRequest(f"only fine-tuned models can be deleted; {model_id!r} is a base model", param="model")
        self.store.mark_model_deleted(model_id)
        return {"id": model_id, "object": "model", "deleted": True}

    def resolve_model(self, model_id: str) -> ResolvedModel:
        """(base, weights directory or None) to serve ``model_id``: a base, a fine-tuned model or a checkpoint.

        ``NotFound`` (``code="model_not_found"``) for anything ``list_models`` does not list.
        """
        from tuneforge.config import DEFAULT_MODEL
        from tuneforge.model.methods import find_saved_weights

        row = self.store.get_model(model_id)
        if row is not None and not row["deleted"]:
            if row["kind"] == "base":
                return ResolvedModel(row["base"] or model_id, None)
            job = self.get_job(row["job_id"])
            found = find_saved_weights(job.run_dir, job.config.get("method"))
            if found is None:
                raise NotFound(f"the weights of {model_id} are gone from {job.run_dir}", param="model", code="model_not_found")
            return ResolvedModel(str(job.config.get("model")), found[1])
        if model_id == DEFAULT_MODEL:
            return ResolvedModel(DEFAULT_MODEL, None)
        match = re.match(r"\A(?P<model>.+):ckpt-step-(?P<step>\d+)\Z", model_id)
        if match:
            for job_id in self._jobs_with_checkpoints():
                job = self.get_job(job_id)
                for cp in self.store.list_checkpoints(job_id):
                    if cp["fine_tuned_model_checkpoint"] == model_id and _checkpoint_exists(job, cp) and not self._deleted(job):
                        return ResolvedModel(str(job.config.get("model")), job.run_dir / cp["path"] / "weights")
        raise _model_not_found(model_id)

    def evaluate_model(self, model_id: str, data: str | Path, max_examples: int | None = None, **options: Any) -> Any:
        """Score a model id on ``data`` (a path or an uploaded file id): a ``ModelEvaluation``.

        ``options`` go to ``evaluate.run.evaluate_model`` (``max_length``, ``batch_size``, ``max_new_tokens``, ``metrics``).
        """
        from tuneforge.data.manager import TrainingDataManager
        from tuneforge.evaluate.run import evaluate_model
        from tuneforge.runs import load_trained

        base, weights = self.resolve_model(model_id)
        examples, _ = TrainingDataManager().load(self._data_path(data))
        examples = examples[:max_examples] if max_examples else examples
        model, tokenizer, _ = load_trained(weights, base)
        return evaluate_model(model, tokenizer, examples, **options)

    def compare_models(self, model_ids: Sequence[str], data: str | Path | None = None, **options: Any) -> dict[str, Any]:
        """Evaluate every model id on the same ``data`` with ``tuneforge compare``'s code (``evaluate.compare.compare_sources``).

        ``data``: a path or an uploaded file id (default: the first job's test split). ``options`` go to
        ``compare_sources`` (``metric``, ``baseline``, ``fail_if_worse``, ``max_examples`` and
        ``evaluate_model``'s settings). Returns ``Comparison.to_dict()`` (table, pairs with McNemar's test
        and the bootstrap interval, regressions) with ``evaluations`` (id -> performance) and ``comparison``
        (the ``Comparison`` itself, for ``write_comparison``).
        """
        from tuneforge.evaluate.compare import compare_sources

        comparison = compare_sources(model_ids, self._data_path(data) if data is not None else None,
                                     resolve=self.compare_contender, **options)
        return {"evaluations": comparison.performances, **comparison.to_dict(), "comparison": comparison}

    def compare_contender(self, model_id: str) -> Any:
        """A model id of this store (fine-tuned ``ft:…``, checkpoint ``…:ckpt-step-N``, base) as an
        ``evaluate.compare.Contender`` (its weights, base and run directory), or None when the store does not know it."""
        from tuneforge.evaluate.compare import Contender

        try:
            base, weights = self.resolve_model(model_id)
        except NotFound:
            if is_store_model_id(model_id):
                raise  # an ft: id or a checkpoint id this store does not (or no longer) know: say so
            return None  # a run directory, a model name: the file system's business
        if weights is None:
            return Contender(name=model_id, source=model_id, kind="model", base_model=base)
        row = self.store.get_model(model_id)
        if row is not None and row.get("job_id"):
            return Contender(name=model_id, source=model_id, kind="fine-tuned", run_dir=self.get_job(row["job_id"]).run_dir,
                             weights=weights, base_model=base)
        # A checkpoint: RUN_DIR/checkpoints/step-N/weights.
        return Contender(name=model_id, source=model_id, kind="checkpoint", run_dir=weights.parent.parent.parent,
                         weights=weights, base_model=base)

    # --- what the job process and the worker record ----------------------------------------------
    def add_event(self, job_id: str, message: str, level: str = "info", type_: str = "message",
                  data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append a ``fine_tuning.job.event`` to the job's list (the job process and the worker use it)."""
        return _event_wire(self.store.add_event(job_id, message, level, type_, data))

    def fine_tuned_name(self, job: TrainingJob) -> str:
        """``ft:<base>:<suffix>:<job-id>``; the base is its last path component for a local model directory."""
        base = str(job.model).rstrip("/")
        base = base.rsplit("/", 1)[-1] if "/" in base else base
        return f"ft:{base.replace(':', '-')}:{job.suffix or ''}:{job.id}"

    # --- internals -----------------------------------------------------------------------------
    def _queue(self, job_id: str, model: str, config: dict[str, Any], hyper: dict[str, Any], training_file: str,
               validation_file: str | None, suffix: str | None, seed: int, metadata: dict[str, str] | None,
               method_type: str = "supervised", kind: dict[str, Any] | None = None) -> TrainingJob:
        now = time.time()
        row = {"id": job_id, "status": str(S.VALIDATING_FILES), "model": model, "created_at": now, "queued_at": None,
               "training_file": training_file, "validation_file": validation_file, "hyperparameters": hyper,
               # kind: a search job's own method object; else OpenAI's {type, <type>: {hyperparameters}}
               "method": kind or {"type": method_type, method_type: {"hyperparameters": hyper}},
               "suffix": suffix, "seed": seed, "config": config, "run_dir": str(config["output"]), "error": None,
               "result_files": [], "metadata": metadata, "retries": 0, "max_retries": self.max_retries}
        self.store.insert_job(row)
        self.store.upsert_model({"id": model, "kind": "base", "created": now, "owned_by": "system", "base": model})
        self.add_event(job_id, f"Created fine-tuning job: {job_id}")
        self.add_event(job_id, f"Validating training file: {training_file}")
        self.store.update_job(job_id, {"status": str(S.QUEUED), "queued_at": time.time()},
                              only_if_status=(S.VALIDATING_FILES,))
        self.add_event(job_id, "Files validated, moving job to queued state")
        return self.get_job(job_id)

    def _transition(self, job_id: str, allowed: tuple[RunStatus, ...], to: RunStatus, action: str,
                    values: dict[str, Any], message: str) -> TrainingJob:
        for _ in range(5):  # the status may change between the read and the conditional update
            job = self.get_job(job_id)
            if job.status not in allowed:
                raise Conflict(f"cannot {action} job {job_id}: it is {wire_status(job.status)}; "
                               f"{action} applies to {', '.join(wire_status(s) for s in allowed)} jobs")
            if self.store.update_job(job_id, {"status": str(to), **values}, only_if_status=(job.status,)):
                self.add_event(job_id, message)
                return self.get_job(job_id)
        raise Conflict(f"cannot {action} job {job_id}: its status keeps changing; try again")

    def _training_file(self, file_id: str, param: str) -> StoredFile:
        if not ids.is_valid(file_id, ids.FILE_PREFIX):
            raise InvalidRequest(f"{param}: no such file {str(file_id)[:80]!r}; upload one with purpose fine-tune first",
                                 param=param)
        try:
            stored = self.files.get(file_id)
        except NotFound:
            raise InvalidRequest(f"{param}: no such file {file_id}", param=param) from None
        if stored.purpose != "fine-tune":
            raise InvalidRequest(f"{param}: {file_id} has purpose {stored.purpose!r}, not 'fine-tune'", param=param)
        errors = stored.errors
        if errors:
            listed = "\n".join(f"  {stored.filename}:{e['line'] or '-'}: {e['code']}: {e['message']}" for e in errors[:20])
            more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise InvalidRequest(f"{param}: {file_id} ({stored.filename}) has {len(errors)} error(s); fix them and upload "
                                 f"it again:\n{listed}{more}", param=param, code=f"invalid_{param}")
        if not stored.path.is_file():
            raise InvalidRequest(f"{param}: the content of {file_id} is gone", param=param)
        examples = (stored.summary or {}).get("examples")
        from tuneforge.data.doctor.options import ValidationOptions

        least = ValidationOptions().min_examples if param == "training_file" else 1  # what training requires
        if isinstance(examples, int) and examples < least:
            raise InvalidRequest(f"{param}: {file_id} ({stored.filename}) has {examples} example(s), but must have at "
                                 f"least {least} examples", param=param, code=f"invalid_{param}")
        return stored

    def _check_model(self, model: str) -> str:
        from tuneforge.model.resolve import EMBEDDED_MODELS, resolve_model

        model = str(model).strip()
        if not model:
            raise InvalidRequest("model: name a base model", param="model")
        if model.startswith("ft:"):
            raise InvalidRequest(f"model: continuing from a fine-tuned model ({model}) is not supported yet; "
                                 "name its base model", param="model")
        if model.lower() in EMBEDDED_MODELS:
            return model
        row = self.store.get_model(model)
        if row is not None and row["kind"] == "base":
            return model
        try:
            resolve_model(model)
        except ModelNotFoundError as error:
            raise InvalidRequest(f"model: {error}", param="model", code="model_not_found") from None
        except TuneforgeError as error:
            raise InvalidRequest(f"model: {error}", param="model") from None
        return model

    def _job_config(self, values: dict[str, Any], hyper: dict[str, Any],
                    extra: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The validated ``FineTuningConfig`` values of a job and its resolved hyperparameters."""
        from tuneforge.config import DEFAULT_LEARNING_RATE, make_config

        extra = dict(extra or {})
        for name in extra:
            if name in RESERVED_FIELDS:
                where = RESERVED_FIELDS[name]
                hint = f"; use the request's {where} field" if where else "; a job sets it itself"
                raise InvalidRequest(f"extra.{name}: may not be set through extra{hint}", param=f"extra.{name}")
        merged = {**JOB_DEFAULTS, **extra, **values}
        if values.get("validation_data"):
            merged["validation_split"] = 0.0
        if hyper["n_epochs"] != "auto":
            merged["epochs"] = hyper["n_epochs"]
        if hyper["batch_size"] != "auto":
            merged["batch_size"] = hyper["batch_size"]
        multiplier = hyper["learning_rate_multiplier"]
        try:
            probe = make_config({k: v for k, v in merged.items() if k != "learning_rate"})
            if multiplier != "auto":
                merged["learning_rate"] = float(multiplier) * DEFAULT_LEARNING_RATE[probe.method]
            config = make_config(merged)
        except ConfigError as error:
            raise InvalidRequest(str(error), param=_param_of(error, extra)) from None
        resolved = {"n_epochs": _number(config.epochs), "batch_size": config.batch_size,
                    "learning_rate_multiplier": (float(multiplier) if multiplier != "auto"
                                                 else round(config.resolved_learning_rate / DEFAULT_LEARNING_RATE[config.method], 6))}
        for kind_fields in METHOD_HYPERPARAMETERS.values():  # a method's own ones, resolved from the config
            for name, (field, _, _) in kind_fields.items():
                if name in hyper:
                    resolved[name] = getattr(config, field)
        return config.model_dump(mode="json", exclude_unset=True), resolved  # only what was chosen: a method's options stay its own

    def _data_path(self, data: str | Path) -> Path:
        if isinstance(data, str) and ids.is_valid(data, ids.FILE_PREFIX):
            return self.files.get(data).path
        return Path(data)

    def _jobs_with_checkpoints(self) -> set[str]:
        return {row["job_id"] for row in self.store.list_checkpoints()}

    def _deleted(self, job: TrainingJob) -> bool:
        if not job.fine_tuned_model:
            return False
        row = self.store.get_model(job.fine_tuned_model)
        return bool(row and row["deleted"])


def _hyperparameters(hyperparameters: dict[str, Any] | None, method: dict[str, Any] | None) -> dict[str, Any]:
    """n_epochs / batch_size / learning_rate_multiplier, each a checked number or "auto"; ``method``'s win."""
    given = dict(hyperparameters or {})
    param_prefix = "hyperparameters"
    kind = _method_type(method)
    own = METHOD_HYPERPARAMETERS.get(kind, {})
    if method is not None:
        section = method.get(kind) or {}
        if not isinstance(section, dict):
            raise InvalidRequest(f"method.{kind} must be an object like {{\"hyperparameters\": {{...}}}}", param=f"method.{kind}")
        inner = section.get("hyperparameters")
        if inner:
            if not isinstance(inner, dict):
                raise InvalidRequest(f"method.{kind}.hyperparameters must be an object", param=f"method.{kind}.hyperparameters")
            given, param_prefix = dict(inner), f"method.{kind}.hyperparameters"
    unknown = sorted(set(given) - set(HYPERPARAMETER_FIELDS) - set(own))
    if unknown:
        raise InvalidRequest(f"{param_prefix}.{unknown[0]}: unknown hyperparameter; use "
                             f"{', '.join([*HYPERPARAMETER_FIELDS, *own])}", param=f"{param_prefix}.{unknown[0]}")
    checked = {}
    limits = {"n_epochs": (0, 1000, False), "batch_size": (1, 4096, True), "learning_rate_multiplier": (0, 1000, False)}
    for name in HYPERPARAMETER_FIELDS:
        value = given.get(name, "auto")
        low, high, integer = limits[name]
        ok = value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                                 and low < value <= high if not integer else
                                 isinstance(value, int) and not isinstance(value, bool) and low <= value <= high)
        if not ok:
            kind = "an integer" if integer else "a number"
            raise InvalidRequest(f"{param_prefix}.{name}: must be \"auto\" or {kind} in "
                                 f"{'[' if integer else '('}{low}, {high}], got {value!r}", param=f"{param_prefix}.{name}")
        checked[name] = value
    for name, (_, low, high) in own.items():
        value = given.get(name, "auto")
        if not (value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                                    and low < value <= high)):
            raise InvalidRequest(f"{param_prefix}.{name}: must be \"auto\" or a number in ({low:g}, {high:g}], got {value!r}",
                                 param=f"{param_prefix}.{name}")
        checked[name] = value
    return checked


def _method_type(method: dict[str, Any] | None) -> str:
    """OpenAI's ``method.type`` (default ``supervised``), checked against what tuneforge jobs train."""
    if method is None:
        return "supervised"
    if not isinstance(method, dict):
        raise InvalidRequest("method must be an object like {\"type\": \"supervised\"}", param="method")
    kind = method.get("type", "supervised")
    if kind not in METHOD_OBJECTIVES:
        raise InvalidRequest(f"method.type {kind!r} is not supported; tuneforge jobs run {' and '.join(map(repr, METHOD_OBJECTIVES))} "
                             "(other objectives: extra={'objective': ...})", param="method.type")
    return kind


def _objective_fields(kind: str, hyper: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """The config fields ``method.type`` sets: ``dpo`` -> objective dpo (and its beta); ``supervised`` leaves the
    objective to ``extra`` (default sft)."""
    if kind == "supervised":
        return {}
    objective = METHOD_OBJECTIVES[kind]
    chosen = (extra or {}).get("objective")
    if chosen is not None and chosen != objective:
        raise InvalidRequest(f"extra.objective: {chosen!r} contradicts method.type {kind!r} (objective {objective}); "
                             "remove one of them", param="extra.objective")
    fields: dict[str, Any] = {"objective": objective}
    for name, (field, _, _) in METHOD_HYPERPARAMETERS.get(kind, {}).items():
        if hyper.get(name, "auto") != "auto":
            fields[field] = hyper[name]
    return fields


def _check_seed(seed: int | None) -> int:
    if seed is None:
        return random.SystemRandom().randint(0, MAX_SEED)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}", param="seed")
    return seed


def _number(value: float | str) -> int | float | str:
    """A whole number of epochs as an int (OpenAI's form); ``auto`` (chosen from the data by the run) as it is."""
    if isinstance(value, str):
        return value
    return int(value) if float(value).is_integer() else value


def _param_of(error: ConfigError, extra: dict[str, Any]) -> str | None:
    """The request field a config problem is about: ``extra.<field>``, or the hyperparameter it came from."""
    first = error.problems[0] if error.problems else ""
    name = first.split(":", 1)[0].split(".", 1)[0].strip()
    back = {"epochs": "hyperparameters.n_epochs", "batch_size": "hyperparameters.batch_size",
            "learning_rate": "hyperparameters.learning_rate_multiplier"}
    if name in extra:
        return f"extra.{name}"
    return back.get(name, "extra" if extra else None)


def _event_wire(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "fine_tuning.job.event", "created_at": int(row["created_at"]), "level": row["level"],
            "message": row["message"], "type": row["type"], "data": row["data"]}


def _checkpoint_wire(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "fine_tuning.job.checkpoint", "created_at": int(row["created_at"]),
            "fine_tuned_model_checkpoint": row["fine_tuned_model_checkpoint"], "fine_tuning_job_id": row["job_id"],
            "step_number": row["step_number"], "metrics": dict(row["metrics"] or {})}


def _checkpoint_exists(job: TrainingJob, row: dict[str, Any]) -> bool:
    """Whether a recorded checkpoint is still on disk (older ones are pruned); a run directory not here counts as yes."""
    if not job.run_dir.is_dir():
        return True
    return (job.run_dir / row["path"] / "weights").is_dir()


def _model_wire(model_id: str, created: float, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(created), "owned_by": owned_by}


def is_store_model_id(model_id: str) -> bool:
    """Whether ``model_id`` has the shape of a model only a job store knows: ``ft:…`` or ``…:ckpt-step-N``."""
    return model_id.startswith("ft:") or re.search(r":ckpt-step-\d+\Z", model_id) is not None


def _model_not_found(model_id: str) -> NotFound:
    return NotFound(f"The model `{model_id}` does not exist; list the models with GET /v1/models or `tuneforge jobs list`",
                    param="model", code="model_not_found")


def _not_found_after(kind: str):
    return lambda after: NotFound(f"after: no {kind} {str(after)[:80]!r} in this list", param="after")
