"""``/v1/files`` and ``/v1/fine_tuning/jobs``: OpenAI's fine-tuning API over ``FineTuningManager``.

Routes are plain functions (FastAPI runs them in its thread pool: the manager's store and the data
doctor block). Ids in paths are checked by the manager against strict patterns before any lookup;
an upload's file name is metadata only. Job creation accepts OpenAI's fields, and tuneforge's own
``FineTuningConfig`` fields under the namespaced ``tuneforge`` object (``extra_body={"tuneforge":
{"lora_r": 8}}`` from the SDK); unknown top-level fields are ignored as OpenAI's SDK may send new ones.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.server.errors import APIError
from tuneforge.server.wire import wire

router = APIRouter()
Cursor = Query(default=None, max_length=128)
MIN_EXPIRY, MAX_EXPIRY = 3600, 2_592_000  # OpenAI's limits on expires_after[seconds]


def _manager(request: Request) -> Any:
    return request.app.state.tuneforge.manager


# ----- files -------------------------------------------------------------------------------------

@router.post("/files")
def create_file(request: Request, file: UploadFile = File(...), purpose: Literal["fine-tune"] = Form(...)) -> dict[str, Any]:
    """Upload a training file (``purpose=fine-tune``, the only purpose served); the data doctor checks it at once."""
    expires = _expiry(request)
    stored = _manager(request).upload_file(file.file, file.filename or "upload", purpose, expires)
    return wire(stored)


def _expiry(request: Request) -> int | None:
    """``expires_after[seconds]`` of the multipart form (the SDK flattens ``expires_after`` so), or None."""
    form = getattr(request, "_form", None)  # already parsed by FastAPI for the File/Form parameters
    if form is None:
        return None
    anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    if seconds is None:
        return None
    if anchor not in (None, "created_at"):
        raise APIError(400, "expires_after[anchor] must be 'created_at'", param="expires_after.anchor")
    if not (isinstance(seconds, str) and seconds.isdigit() and MIN_EXPIRY <= int(seconds) <= MAX_EXPIRY):
        raise APIError(400, f"expires_after[seconds] must be a whole number from {MIN_EXPIRY} to {MAX_EXPIRY}",
                       param="expires_after.seconds")
    return int(seconds)


@router.get("/files")
def list_files(request: Request, after: Optional[str] = Cursor, limit: int = Query(10000, ge=1, le=10000),
               order: Literal["asc", "desc"] = "desc", purpose: Optional[str] = Query(None, max_length=64)) -> dict[str, Any]:
    return _manager(request).list_files(after, limit, order, purpose).to_openai()


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, request: Request) -> dict[str, Any]:
    return wire(_manager(request).get_file(file_id))


@router.delete("/files/{file_id}")
def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    return _manager(request).delete_file(file_id)


@router.get("/files/{file_id}/content")
def file_content(file_id: str, request: Request) -> Response:
    manager = _manager(request)
    stored = manager.get_file(file_id)
    media = "text/csv" if stored.filename.endswith(".csv") else "application/octet-stream"
    return Response(manager.file_content(file_id), media_type=media)


# ----- fine-tuning jobs --------------------------------------------------------------------------

class JobCreate(BaseModel):
    """``POST /v1/fine_tuning/jobs`` (OPENAI_FT_API.md §6.1) plus ``tuneforge``: FineTuningConfig fields."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=128)
    validation_file: Optional[str] = Field(default=None, max_length=128)
    hyperparameters: Optional[dict[str, Any]] = None
    method: Optional[dict[str, Any]] = None
    suffix: Optional[str] = Field(default=None, max_length=64)
    seed: Optional[int] = Field(default=None, ge=0, le=2_147_483_647)
    metadata: Optional[dict[str, str]] = Field(default=None, max_length=16)
    integrations: Optional[list[Any]] = None
    tuneforge: Optional[dict[str, Any]] = None


@router.post("/fine_tuning/jobs")
def create_job(body: JobCreate, request: Request) -> dict[str, Any]:
    state = request.app.state.tuneforge
    base = state.base_for(body.model)
    if base is None:
        served = ", ".join(state.models)
        raise APIError(400, f"model {body.model[:120]!r} is not served here; fine-tune one of: {served} "
                            "(start the server with --model BASE to add one)", param="model", code="model_not_found")
    if body.integrations:
        raise APIError(400, "integrations are not supported by a local server; follow the job's events instead",
                       param="integrations")
    job = state.manager.create_job(
        body.training_file, model=base.spec, validation_file=body.validation_file, hyperparameters=body.hyperparameters,
        suffix=body.suffix, seed=body.seed, method=body.method, extra=body.tuneforge, metadata=body.metadata)
    return wire(job)


@router.get("/fine_tuning/jobs")
def list_jobs(request: Request, after: Optional[str] = Cursor, limit: int = Query(20, ge=1, le=100)) -> dict[str, Any]:
    metadata = {key[len("metadata["):-1]: value for key, value in request.query_params.items()
                if key.startswith("metadata[") and key.endswith("]")}
    return _manager(request).list_jobs(after, limit, metadata or None).to_openai()


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, request: Request) -> dict[str, Any]:
    return wire(_manager(request).get_job(job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    return wire(_manager(request).cancel(job_id))


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str, request: Request) -> dict[str, Any]:
    return wire(_manager(request).pause(job_id))


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, request: Request) -> dict[str, Any]:
    return wire(_manager(request).resume(job_id))


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(job_id: str, request: Request, after: Optional[str] = Cursor,
                limit: int = Query(20, ge=1, le=1000)) -> dict[str, Any]:
    return _manager(request).list_events(job_id, after, limit).to_openai()


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(job_id: str, request: Request, after: Optional[str] = Cursor,
                     limit: int = Query(10, ge=1, le=1000)) -> dict[str, Any]:
    return _manager(request).list_checkpoints(job_id, after, limit).to_openai()
