"""The job store: files, jobs, job events, checkpoints, models and workers, in SQLAlchemy Core tables.

SQLite with WAL under ``$TUNEFORGE_HOME/jobs.db`` by default (nothing to install); any SQLAlchemy URL
otherwise, e.g. ``postgresql+psycopg://user:pass@host/db`` so that workers on several machines share
one queue. No hand-written SQL: every statement is built with SQLAlchemy Core and works on both.

Claiming is atomic on both databases: ``claim_next`` selects the oldest queued job ``FOR UPDATE SKIP
LOCKED`` (PostgreSQL; SQLite ignores the clause) and moves it with one conditional UPDATE
(``status = 'queued' AND worker_id IS NULL``); of two workers racing for a job, exactly one UPDATE
changes a row, and the other moves on to the next job.

Rows hold the OpenAI wire values; times are Unix seconds as floats (ordering), shown as ints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tuneforge.core.paths import tuneforge_home
from tuneforge.core.status import RunStatus

metadata = sa.MetaData()
# Paths and model names are Text: PostgreSQL enforces VARCHAR lengths, and a path has none (SQLite ignores them).

files = sa.Table(
    "files", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("filename", sa.String(512), nullable=False),  # the user's name: metadata only, never a path
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # processed | error (OpenAI's deprecated field)
    sa.Column("findings", sa.JSON, nullable=False),  # the data doctor's findings: [{severity, code, message, line, field}]
    sa.Column("summary", sa.JSON, nullable=True),  # format, counts
    sa.Column("expires_at", sa.Float, nullable=True),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False, index=True),  # RunStatus words; interrupted = paused
    sa.Column("model", sa.Text, nullable=False),  # the base model as the user named it
    sa.Column("fine_tuned_model", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("queued_at", sa.Float, nullable=True, index=True),  # FIFO: the time it (last) entered the queue
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("training_file", sa.Text, nullable=False),
    sa.Column("validation_file", sa.Text, nullable=True),
    sa.Column("hyperparameters", sa.JSON, nullable=False),
    sa.Column("method", sa.JSON, nullable=True),
    sa.Column("suffix", sa.String(64), nullable=True),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),  # the FineTuningConfig values the run is made from
    sa.Column("run_dir", sa.Text, nullable=False),
    sa.Column("error", sa.JSON, nullable=True),  # {code, message, param} when failed
    sa.Column("trained_tokens", sa.BigInteger, nullable=True),
    sa.Column("result_files", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("estimated_finish", sa.Float, nullable=True),
    sa.Column("retries", sa.Integer, nullable=False, default=0),  # crash recoveries so far
    sa.Column("max_retries", sa.Integer, nullable=False, default=3),
    sa.Column("worker_id", sa.String(256), nullable=True),  # the worker holding the job's process
    sa.Column("host", sa.String(256), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),  # the job process
    sa.Column("heartbeat_at", sa.Float, nullable=True),
)

job_events = sa.Table(
    "job_events", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # global order; newest = largest
    sa.Column("id", sa.String(96), nullable=False, unique=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),  # message | metrics
    sa.Column("data", sa.JSON, nullable=True),
)

checkpoints = sa.Table(
    "checkpoints", metadata,
    sa.Column("id", sa.String(96), primary_key=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("step_number", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("path", sa.Text, nullable=False),  # relative to the run directory: checkpoints/step-NNNNNN
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("fine_tuned_model_checkpoint", sa.Text, nullable=False),
    sa.UniqueConstraint("job_id", "step_number"),
)

models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # base | fine-tuned
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("owned_by", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),
    sa.Column("base", sa.Text, nullable=True),  # what the base resolves from (name or path)
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

workers = sa.Table(
    "workers", metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
)


def default_database_url() -> str:
    """``sqlite:///$TUNEFORGE_HOME/jobs.db``."""
    return f"sqlite:///{tuneforge_home() / 'jobs.db'}"


def make_engine(database_url: str | None = None) -> Engine:
    """An engine for ``database_url`` (default: SQLite under ``$TUNEFORGE_HOME``), tables created.

    SQLite gets WAL (readers never block the writer), a 30 s busy timeout (a job process, its worker
    and the server write the same file) and foreign processes safe connections.
    """
    url = sa.engine.make_url(database_url or default_database_url())
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


def _clean(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class JobStore:
    """Every read and write of the job tables. Safe to share between threads; one per process is enough."""

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url or default_database_url()
        self.engine = make_engine(self.database_url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def begin(self) -> Any:
        return self.engine.begin()

    def dispose(self) -> None:
        self.engine.dispose()

    # --- files ---------------------------------------------------------------------------------
    def insert_file(self, row: dict[str, Any]) -> None:
        with self.begin() as db:
            db.execute(files.insert().values(**row))

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        with self.begin() as db:
            row = db.execute(files.select().where(files.c.id == file_id)).first()
        return _clean(row) if row else None

    def list_files(self, purpose: str | None = None, order: str = "desc") -> list[dict[str, Any]]:
        query = files.select()
        if purpose:
            query = query.where(files.c.purpose == purpose)
        ordering = (files.c.created_at.desc(), files.c.id.desc()) if order == "desc" else (files.c.created_at, files.c.id)
        with self.begin() as db:
            return [_clean(row) for row in db.execute(query.order_by(*ordering))]

    def delete_file(self, file_id: str) -> bool:
        with self.begin() as db:
            return db.execute(files.delete().where(files.c.id == file_id)).rowcount > 0

    # --- jobs ----------------------------------------------------------------------------------
    def insert_job(self, row: dict[str, Any]) -> None:
        with self.begin() as db:
            db.execute(jobs.insert().values(**row))

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.begin() as db:
            row = db.execute(jobs.select().where(jobs.c.id == job_id)).first()
        return _clean(row) if row else None

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job, newest first."""
        with self.begin() as db:
            return [_clean(r) for r in db.execute(jobs.select().order_by(jobs.c.created_at.desc(), jobs.c.id.desc()))]

    def update_job(self, job_id: str, values: dict[str, Any], only_if_status: tuple[str, ...] | None = None,
                   only_if_worker: str | None = None) -> bool:
        """Set ``values`` on the job; with ``only_if_status`` only when it is in one of them. Returns whether it changed."""
        statement = jobs.update().where(jobs.c.id == job_id)
        if only_if_status is not None:
            statement = statement.where(jobs.c.status.in_([str(s) for s in only_if_status]))
        if only_if_worker is not None:
            statement = statement.where(jobs.c.worker_id == only_if_worker)
        with self.begin() as db:
            return db.execute(statement.values(**values)).rowcount > 0

    def claim_next(self, worker_id: str, host: str) -> dict[str, Any] | None:
        """Move the oldest queued job to running for ``worker_id`` and return it; None when the queue is empty.

        Atomic: the candidate is selected ``FOR UPDATE SKIP LOCKED`` (PostgreSQL: a job another worker
        is claiming is skipped, not waited for) and taken with a conditional UPDATE, so a job is
        claimed by exactly one worker however many race for it.
        """
        for _ in range(20):  # a lost race moves on to the next candidate
            with self.begin() as db:
                candidate = db.execute(
                    sa.select(jobs.c.id).where(jobs.c.status == str(RunStatus.QUEUED), jobs.c.worker_id.is_(None))
                    .order_by(jobs.c.queued_at, jobs.c.created_at, jobs.c.id).limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if candidate is None:
                    return None
                now = time.time()
                taken = db.execute(
                    jobs.update().where(jobs.c.id == candidate.id, jobs.c.status == str(RunStatus.QUEUED),
                                        jobs.c.worker_id.is_(None))
                    .values(status=str(RunStatus.RUNNING), worker_id=worker_id, host=host, heartbeat_at=now,
                            started_at=sa.func.coalesce(jobs.c.started_at, now), pid=None)
                ).rowcount
            if taken:
                return self.get_job(candidate.id)
        return None

    def heartbeat(self, worker_id: str, host: str, pid: int, concurrency: int) -> None:
        """Record that ``worker_id`` is alive, for itself and every job it holds."""
        now = time.time()
        with self.begin() as db:
            changed = db.execute(workers.update().where(workers.c.id == worker_id).values(heartbeat_at=now)).rowcount
            if not changed:
                db.execute(workers.insert().values(id=worker_id, host=host, pid=pid, started_at=now, heartbeat_at=now,
                                                   concurrency=concurrency))
            db.execute(jobs.update().where(jobs.c.worker_id == worker_id).values(heartbeat_at=now))

    def remove_worker(self, worker_id: str) -> None:
        with self.begin() as db:
            db.execute(workers.delete().where(workers.c.id == worker_id))

    def held_jobs(self, worker_id: str | None = None) -> list[dict[str, Any]]:
        """Jobs some worker holds (or ``worker_id`` holds)."""
        query = jobs.select().where(jobs.c.worker_id.is_not(None))
        if worker_id is not None:
            query = query.where(jobs.c.worker_id == worker_id)
        with self.begin() as db:
            return [_clean(r) for r in db.execute(query)]

    def release(self, job_id: str, worker_id: str, values: dict[str, Any] | None = None) -> bool:
        """Let go of a job ``worker_id`` holds (its process has ended), setting ``values`` too."""
        return self.update_job(job_id, {"worker_id": None, "pid": None, **(values or {})}, only_if_worker=worker_id)

    # --- events --------------------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, level: str = "info", type_: str = "message",
                  data: dict[str, Any] | None = None, created_at: float | None = None) -> dict[str, Any]:
        from tuneforge.jobs.ids import new_id

        row = {"id": new_id("ftevent-"), "job_id": job_id, "created_at": created_at or time.time(), "level": level,
               "message": message, "type": type_, "data": data}
        with self.begin() as db:
            db.execute(job_events.insert().values(**row))
        return row

    def list_events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's events, newest first."""
        with self.begin() as db:
            rows = db.execute(job_events.select().where(job_events.c.job_id == job_id).order_by(job_events.c.seq.desc()))
            return [_clean(r) for r in rows]

    # --- checkpoints ---------------------------------------------------------------------------
    def upsert_checkpoint(self, row: dict[str, Any]) -> None:
        """Record a checkpoint; a step written again (after a resume or rollback) replaces the earlier row."""
        with self.begin() as db:
            db.execute(checkpoints.delete().where(checkpoints.c.job_id == row["job_id"],
                                                  checkpoints.c.step_number == row["step_number"]))
            db.execute(checkpoints.insert().values(**row))

    def list_checkpoints(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Checkpoints (of one job), newest step first."""
        query = checkpoints.select()
        if job_id is not None:
            query = query.where(checkpoints.c.job_id == job_id)
        with self.begin() as db:
            return [_clean(r) for r in db.execute(query.order_by(checkpoints.c.step_number.desc(), checkpoints.c.id))]

    # --- models --------------------------------------------------------------------------------
    def upsert_model(self, row: dict[str, Any]) -> None:
        with self.begin() as db:
            existing = db.execute(models.select().where(models.c.id == row["id"])).first()
            if existing is None:
                db.execute(models.insert().values(deleted=False, **row))
            elif row.get("kind") == "fine-tuned" or existing.deleted:
                db.execute(models.update().where(models.c.id == row["id"]).values(deleted=False, **row))

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        with self.begin() as db:
            row = db.execute(models.select().where(models.c.id == model_id)).first()
        return _clean(row) if row else None

    def list_models(self) -> list[dict[str, Any]]:
        with self.begin() as db:
            return [_clean(r) for r in db.execute(models.select().where(models.c.deleted.is_(False))
                                                  .order_by(models.c.created, models.c.id))]

    def mark_model_deleted(self, model_id: str) -> bool:
        with self.begin() as db:
            return db.execute(models.update().where(models.c.id == model_id, models.c.deleted.is_(False))
                              .values(deleted=True)).rowcount > 0

    def workers_alive(self, stale_seconds: float) -> list[dict[str, Any]]:
        with self.begin() as db:
            return [_clean(r) for r in db.execute(workers.select().where(workers.c.heartbeat_at >= time.time() - stale_seconds))]

