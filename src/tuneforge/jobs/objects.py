"""What the job API returns: ``TrainingJob``, ``TrainingStatus``, ``StoredFile``, ``Page``, each with ``to_openai()``.

``to_openai()`` is the exact wire object of OpenAI's fine-tuning API (``fine_tuning.job``, ``file``,
``fine_tuning.job.event``, ``fine_tuning.job.checkpoint``, ``model``, a cursor ``list``): every key
present, ``null`` where allowed, times as int Unix seconds. The server returns these dicts as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from tuneforge.core.status import RunStatus, parse_status

ORGANIZATION = "org-local"  # OpenAI's organization_id / owned_by: one local organisation
PAUSED = "paused"  # how the wire API names a job status RunStatus calls interrupted (paused at a checkpoint)


def _int_time(value: float | None) -> int | None:
    return int(value) if value is not None else None


def wire_status(status: RunStatus | str) -> str:
    """The job status OpenAI's API uses: RunStatus words, with ``interrupted`` shown as ``paused``."""
    return PAUSED if str(status) == RunStatus.INTERRUPTED else str(status)


@dataclass
class TrainingJob:
    """A fine-tuning job: OpenAI's job fields plus its run directory (``run_dir``) and tuneforge's details.

    ``status`` is a ``RunStatus``: validating_files → queued → running → succeeded | failed |
    cancelled, and ``interrupted`` while paused (``to_openai`` shows it as ``paused``).
    """

    id: str
    model: str
    status: RunStatus
    created_at: int
    training_file: str
    hyperparameters: dict[str, Any]
    seed: int
    run_dir: Path
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None  # {code, message, param} when failed, else None
    result_files: list[str] = field(default_factory=list)
    validation_file: str | None = None
    estimated_finish: int | None = None
    suffix: str | None = None
    method: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the FineTuningConfig values of its run
    retries: int = 0  # how often it was continued after its process died
    worker_id: str | None = None
    object: str = "fine_tuning.job"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TrainingJob:
        return cls(
            id=row["id"], model=row["model"], status=parse_status(row["status"]) or RunStatus.FAILED,
            created_at=int(row["created_at"]), training_file=row["training_file"],
            hyperparameters=dict(row["hyperparameters"] or {}), seed=int(row["seed"]), run_dir=Path(row["run_dir"]),
            fine_tuned_model=row["fine_tuned_model"], finished_at=_int_time(row["finished_at"]),
            trained_tokens=row["trained_tokens"], error=row["error"] or None, result_files=list(row["result_files"] or []),
            validation_file=row["validation_file"], estimated_finish=_int_time(row["estimated_finish"]),
            suffix=row["suffix"], method=row["method"], metadata=row["metadata"], config=dict(row["config"] or {}),
            retries=int(row["retries"] or 0), worker_id=row["worker_id"],
        )

    def to_openai(self) -> dict[str, Any]:
        """The ``fine_tuning.job`` wire object (OPENAI_FT_API.md §6.2)."""
        return {
            "id": self.id, "object": self.object, "model": self.model, "created_at": self.created_at,
            "finished_at": self.finished_at, "fine_tuned_model": self.fine_tuned_model, "organization_id": ORGANIZATION,
            "result_files": list(self.result_files), "status": wire_status(self.status),
            "validation_file": self.validation_file, "training_file": self.training_file,
            "hyperparameters": dict(self.hyperparameters), "trained_tokens": self.trained_tokens,
            "integrations": [], "seed": self.seed,
            "estimated_finish": self.estimated_finish if self.status == RunStatus.RUNNING else None,
            "error": dict(self.error) if self.error and self.status == RunStatus.FAILED else None,
            "metadata": self.metadata, "user_provided_suffix": self.suffix,
            "method": self.method or {"type": "supervised", "supervised": {"hyperparameters": dict(self.hyperparameters)}},
        }


@dataclass
class TrainingStatus:
    """Where a job stands, from its run's ``events.jsonl``: ``FineTuningManager.monitor_progress``."""

    job_id: str
    status: RunStatus
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the latest train.step (and eval.result) values
    eta_seconds: float | None = None
    issues: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None  # the newest checkpoint, relative to the run directory
    error: dict[str, Any] | None = None

    @property
    def progress(self) -> float | None:
        """Fraction of the optimizer steps done, 0..1 (None before training starts)."""
        return self.step / self.total_steps if self.total_steps else None

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": wire_status(self.status), "step": self.step,
                "total_steps": self.total_steps, "epoch": self.epoch, "progress": self.progress, "metrics": self.metrics,
                "eta_seconds": self.eta_seconds, "issues": self.issues, "checkpoint": self.checkpoint, "error": self.error}


@dataclass
class StoredFile:
    """An uploaded file: OpenAI's file fields plus the data doctor's ``findings`` and where its bytes are."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    status: str  # processed (no error found) | error
    findings: list[dict[str, Any]]  # [{severity, code, message, line, field}]
    path: Path
    summary: dict[str, Any] | None = None
    expires_at: int | None = None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if f.get("severity") == "error"]

    def to_openai(self) -> dict[str, Any]:
        """The ``file`` wire object; ``status_details`` summarises the errors, ``findings`` lists them all."""
        errors = self.errors
        details = None
        if errors:
            details = "; ".join(_finding_text(f) for f in errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": self.status, "expires_at": self.expires_at,
                "status_details": details, "findings": self.findings}


def _finding_text(finding: dict[str, Any]) -> str:
    where = f"line {finding['line']}: " if finding.get("line") else ""
    field_ = f"[{finding['field']}] " if finding.get("field") else ""
    return f"{where}{field_}{finding.get('message', '')}"


T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a cursor list: ``data`` (items in the list's order), ``has_more``; ``to_openai`` the wire list."""

    data: list[T]
    has_more: bool
    first_last: bool = False  # whether the wire list carries first_id / last_id (files, checkpoints)

    def to_openai(self, render: Callable[[T], dict[str, Any]] | None = None) -> dict[str, Any]:
        items = [render(item) if render else _as_wire(item) for item in self.data]
        body: dict[str, Any] = {"object": "list", "data": items, "has_more": self.has_more}
        if self.first_last:
            body["first_id"] = items[0]["id"] if items else None
            body["last_id"] = items[-1]["id"] if items else None
        return body


def _as_wire(item: Any) -> dict[str, Any]:
    return item.to_openai() if hasattr(item, "to_openai") else dict(item)


def paginate(items: list[T], after: str | None, limit: int, key: Callable[[T], str], first_last: bool = False,
             not_found: Callable[[str], Exception] | None = None) -> Page[T]:
    """The items strictly after the one whose id is ``after`` (in this order), at most ``limit``.

    An ``after`` naming no item raises ``not_found(after)`` when given, else gives an empty page.
    """
    start = 0
    if after:
        index = next((i for i, item in enumerate(items) if key(item) == after), None)
        if index is None:
            if not_found is not None:
                raise not_found(after)
            return Page([], False, first_last)
        start = index + 1
    page = items[start:start + limit]
    return Page(page, start + limit < len(items), first_last)
