"""``/ui/api/*``: the JSON the dashboard's pages read beyond the OpenAI routes (mounted again at ``/ui/v1``).

Each route calls the library and returns what it returns: the job manager's progress
(``monitor_progress``), the data doctor's full report (``validate_data`` with the base model's
tokenizer and, when asked, the measured training-time estimate), ``FineTuningConfig`` validation
(``make_config``, every problem at once, as the CLI validates), the run's events, results and
predictions (``views``), and ``export_model`` started in a background thread.
Routes are plain functions: FastAPI runs them in its thread pool, as the job routes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from tuneforge.core.errors import ConfigError, TuneforgeError
from tuneforge.server.dashboard import views
from tuneforge.server.errors import APIError

router = APIRouter(prefix="/ui/api", include_in_schema=False)

# The form of the Start page: (field, label, kind); defaults come from FineTuningConfig itself.
FORM_FIELDS = (
    ("method", "Training method", "choice"), ("epochs", "Epochs", "number"),
    ("learning_rate", "Learning rate (empty: the method's default)", "number"), ("batch_size", "Batch size", "integer"),
    ("max_length", "Max tokens per example", "integer"), ("lora_r", "LoRA rank", "integer"),
    ("lora_alpha", "LoRA alpha", "number"), ("validation_split", "Validation share", "number"),
    ("seed", "Seed", "integer"),
)
JOB_ONLY = ("model", "training_file", "validation_file", "suffix")  # request fields, not FineTuningConfig's


def _state(request: Request) -> Any:
    return request.app.state.tuneforge


def _manager(request: Request) -> Any:
    manager = _state(request).manager
    if manager is None:
        raise APIError(404, "this server runs without a job manager: files and jobs are not available", code="no_jobs")
    return manager


@router.get("/info")
def info(request: Request) -> dict[str, Any]:
    """The served base models, the training methods and export formats, and the Start form with its defaults."""
    from tuneforge.config import DEFAULT_LEARNING_RATE, FineTuningConfig
    from tuneforge.core.registries import EXPORTERS, METHODS

    fields = FineTuningConfig.model_fields
    methods = METHODS.names()
    form = [{"name": name, "label": label, "kind": kind, "default": fields[name].default,
             "help": fields[name].description or "", **({"choices": methods} if name == "method" else {})}
            for name, label, kind in FORM_FIELDS]
    return {"models": list(_state(request).models), "methods": methods, "form": form,
            "default_learning_rate": {m: DEFAULT_LEARNING_RATE[m] for m in methods},
            "export_formats": EXPORTERS.names(), "jobs": _state(request).manager is not None}


class ConfigCheck(BaseModel):
    values: dict[str, Any] = Field(default_factory=dict)


@router.post("/check_config")
def check_config(body: ConfigCheck) -> dict[str, Any]:
    """Every problem of these Start-form values as ``FineTuningConfig`` sees them: ``{"problems": [{field, message}]}``."""
    from tuneforge.config import make_config
    from tuneforge.jobs.manager import JOB_DEFAULTS

    # as create_job merges them: the job's own defaults, then the form's values
    values = {**JOB_DEFAULTS, **{k: v for k, v in body.values.items() if k not in JOB_ONLY and v is not None and v != ""}}
    problems = []
    if not body.values.get("training_file"):
        problems.append({"field": "training_file", "message": "choose an uploaded training file (upload one on the Data page)"})
    try:
        make_config(values)
    except ConfigError as error:
        problems += [_problem(text) for text in error.problems]
    return {"problems": problems}


def _problem(text: str) -> dict[str, str]:
    name, sep, message = text.partition(":")
    field = name.split(".", 1)[0].strip() if sep else "config"
    return {"field": field, "message": message.strip() if sep else text}


@router.get("/files/{file_id}/doctor")
def doctor(file_id: str, request: Request, model: Optional[str] = Query(None, max_length=256),
           estimate: bool = False, max_length: int = Query(512, ge=16, le=131072), batch_size: int = Query(8, ge=1, le=4096),
           epochs: float = Query(3.0, gt=0, le=1000), method: str = Query("lora", max_length=64),
           cost_per_hour: Optional[float] = Query(None, ge=0)) -> dict[str, Any]:
    """The data doctor's full report on an uploaded file, counted with a served model's tokenizer and chat template.

    ``estimate``: also time two training steps of that model, for the training-time (and cost) estimate.
    """
    from tuneforge.data.validate import ValidationOptions, validate_data

    stored = _manager(request).get_file(file_id)
    tokenizer, probe = _tokenizer_and_probe(request, model, estimate, max_length, batch_size, epochs, method)
    options = ValidationOptions(max_length=max_length, batch_size=batch_size, epochs=epochs, cost_per_hour=cost_per_hour)
    report = validate_data(stored.path, options, tokenizer, speed_probe=probe).to_dict()
    for finding in report["findings"]:  # the stored path is an internal detail: show the name it was uploaded as
        finding["file"] = stored.filename
        if isinstance(finding.get("message"), str):
            finding["message"] = finding["message"].replace(str(stored.path), stored.filename)
    report["path"] = stored.filename
    if isinstance(report["stats"].get("files"), dict):
        report["stats"]["files"] = {split: stored.filename for split in report["stats"]["files"]}
    return {"file": stored.to_openai(), "report": report, "model": model}


def _tokenizer_and_probe(request: Request, model: str | None, estimate: bool, max_length: int, batch_size: int,
                         epochs: float, method: str) -> tuple[Any, Any]:
    if not model:
        return None, None
    base = _state(request).base_for(model)
    if base is None:
        raise APIError(400, f"model {model[:120]!r} is not served here; choose one of {', '.join(_state(request).models)}",
                       param="model")
    from tuneforge.model.load import load_tokenizer
    from tuneforge.model.resolve import resolve_model

    path = resolve_model(base.spec)
    tokenizer = load_tokenizer(path)
    if not estimate:
        return tokenizer, None
    from tuneforge.config import make_config
    from tuneforge.train.estimate import training_speed_probe

    config = make_config({"method": method, "batch_size": batch_size, "max_length": max_length, "epochs": epochs})
    return tokenizer, training_speed_probe(path, config, tokenizer.pad_token_id)


@router.get("/jobs")
def jobs(request: Request, limit: int = Query(50, ge=1, le=100)) -> dict[str, Any]:
    """The newest jobs, each with its progress, ETA and best validation loss."""
    manager = _manager(request)
    return {"data": [_job_summary(manager, job) for job in manager.list_jobs(limit=limit).data]}


def _job_summary(manager: Any, job: Any) -> dict[str, Any]:
    progress = manager.monitor_progress(job.id).to_dict()
    results = _results(job.run_dir)
    # a finished run's results.json has the figure; only a run still going has its events read a second time
    events = [] if (results.get("train") or {}).get("best_validation_loss") is not None else views.events_of(job.run_dir)
    return {"job": job.to_openai(), "progress": progress, "best_validation_loss": views.best_validation_loss(events, results)}


def _results(run_dir: Path) -> dict[str, Any]:
    try:
        return views.results_of(run_dir)
    except TuneforgeError:
        return {}


@router.get("/jobs/{job_id}")
def job_detail(job_id: str, request: Request) -> dict[str, Any]:
    """Everything the job page shows at load: the job, progress, curves, timeline, checkpoints (then the stream adds)."""
    manager = _manager(request)
    job = manager.get_job(job_id)
    events = views.events_of(job.run_dir)
    results = _results(job.run_dir)
    return {"job": job.to_openai(), "progress": manager.monitor_progress(job_id).to_dict(),
            "curves": views.curves(events), "timeline": views.timeline(events),
            "last_seq": max((int(e.get("seq", -1)) for e in events), default=-1),
            "checkpoints": manager.list_checkpoints(job_id, limit=100).to_openai()["data"],
            "best_validation_loss": views.best_validation_loss(events, results),
            "config": job.config, "has_results": bool(results)}


@router.get("/jobs/{job_id}/results")
def job_results(job_id: str, request: Request) -> dict[str, Any]:
    """``results.json`` (base vs tuned, baselines, verdict, error analysis) and the test predictions, each marked."""
    job = _manager(request).get_job(job_id)
    results = views.results_of(job.run_dir)
    return {"job": job.to_openai(), "results": results, "predictions": views.predictions(job.run_dir, results),
            "table": views.compare_table(views.performances(results))}


@router.get("/compare")
def compare(request: Request, jobs: str = Query(..., max_length=2000)) -> dict[str, Any]:
    """The curves of each job and their test metrics side by side (``compare_models``' table, best marked)."""
    manager = _manager(request)
    picked = [j.strip() for j in jobs.split(",") if j.strip()][:8]
    runs, performances = {}, {}
    for job_id in picked:
        job = manager.get_job(job_id)
        results = _results(job.run_dir)
        runs[job_id] = {"job": job.to_openai(), "curves": views.curves(views.events_of(job.run_dir))}
        performances[job_id] = results.get("tuned") or {}
    return {"runs": runs, "table": views.compare_table(performances)}


# ----- export ------------------------------------------------------------------------------------

class ExportStart(BaseModel):
    format: str = Field(min_length=1, max_length=64)
    quantize: Optional[str] = Field(default=None, max_length=64)


class ExportRuns:
    """The exports this app started: ``"<job>/<format>"`` -> state; ``app.state.dashboard_exports`` holds one."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()


def _export_runs(request: Request) -> ExportRuns:
    return request.app.state.dashboard_exports


@router.post("/jobs/{job_id}/exports")
def start_export(job_id: str, body: ExportStart, request: Request) -> dict[str, Any]:
    """Start ``export_model`` on the job's run in a background thread; its state is then in ``GET .../exports``."""
    from tuneforge.core.registries import EXPORTERS

    job = _manager(request).get_job(job_id)
    if body.format not in EXPORTERS.names():
        raise APIError(400, f"format {body.format!r} is not one of {', '.join(EXPORTERS.names())}", param="format")
    key, exports = f"{job_id}/{body.format}", _export_runs(request)
    with exports.lock:
        if exports.runs.get(key, {}).get("status") == "running":
            raise APIError(400, f"an export of {job_id} to {body.format} is already running", param="format")
        exports.runs[key] = {"job_id": job_id, "format": body.format, "quantize": body.quantize, "status": "running",
                             "started_at": int(time.time()), "error": None, "manifest": None}
        started = dict(exports.runs[key])
    threading.Thread(target=_run_export, args=(exports, key, job.run_dir, body.format, body.quantize), daemon=True,
                     name=f"export-{job_id}").start()
    return started


def _run_export(exports: ExportRuns, key: str, run_dir: Path, format: str, quantize: str | None) -> None:
    from tuneforge.export.api import export_model

    try:
        result = export_model(run_dir, format, quantize=quantize)
        update = {"status": "succeeded", "manifest": result.details, "out_dir": str(result.out_dir)}
    except TuneforgeError as error:
        report = getattr(error, "report", None)
        update = {"status": "failed", "error": str(error),
                  "parity": report.to_dict() if hasattr(report, "to_dict") else None}
    except Exception as error:  # noqa: BLE001 - a background thread: the page must hear of any failure
        update = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    with exports.lock:
        exports.runs[key].update(update)


@router.get("/jobs/{job_id}/exports")
def list_exports(job_id: str, request: Request) -> dict[str, Any]:
    """Exports started here (with their state) and those already on disk (``export_manifest.json``, with parity)."""
    from tuneforge.core.paths import read_json_object
    from tuneforge.export.api import MANIFEST

    job = _manager(request).get_job(job_id)
    exports = _export_runs(request)
    with exports.lock:
        started = [dict(e) for e in exports.runs.values() if e["job_id"] == job_id]
    on_disk = []
    for path in sorted((job.run_dir / "export").glob(f"*/{MANIFEST}")):
        try:
            on_disk.append({"directory": path.parent.name, "manifest": read_json_object(path, "export it again")})
        except TuneforgeError:
            continue
    return {"started": started, "on_disk": on_disk}
