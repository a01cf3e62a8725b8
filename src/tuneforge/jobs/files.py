"""``FileStore``: uploaded training files under ``$TUNEFORGE_HOME/files/``, each checked by the data doctor.

An upload's bytes go to ``files/<file-id>.jsonl`` (written through a temporary file and a rename);
the id is ``file-`` + random hex and every id is checked against a strict pattern before it reaches a
path. The user's filename is kept as metadata only and never used as a path. The data doctor
(``data/validate.py``) reads the file once at upload; its findings (severity, code, message, line,
field) are kept on the file object, and a file with errors cannot train (``FineTuningManager.create_job``
refuses it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any, Iterator

from tuneforge.core.paths import atomic_write_chunks
from tuneforge.jobs.errors import InvalidRequest, NotFound, PayloadTooLarge
from tuneforge.jobs.ids import FILE_PREFIX, check_id, new_id
from tuneforge.jobs.objects import StoredFile, paginate, Page
from tuneforge.jobs.store import JobStore

PURPOSES = ("fine-tune", "fine-tune-results")  # what may be stored: uploads, and the results a job writes
DEFAULT_MAX_BYTES = 512 * 1024 * 1024  # OpenAI's limit per uploaded file
_CHUNK = 1 << 20


class FileStore:
    """Store, check, list, read and delete files. ``max_bytes`` limits one upload (``PayloadTooLarge``)."""

    def __init__(self, store: JobStore, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.store = store
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def path_of(self, file_id: str) -> Path:
        """Where a file's bytes are; ``file_id`` is checked first (``NotFound`` for a malformed id)."""
        return self.directory / f"{check_id(file_id, FILE_PREFIX)}.jsonl"

    def upload(self, content: bytes | IO[bytes], filename: str, purpose: str = "fine-tune",
               expires_after_seconds: int | None = None) -> StoredFile:
        """Store ``content`` (bytes or a binary stream), run the data doctor on it, return the file object.

        Raises ``InvalidRequest`` (``param="purpose"``) for a purpose other than ``fine-tune``, and
        ``PayloadTooLarge`` when it is over ``max_bytes``. Problems *in the data* never raise: they are
        the file's ``findings`` (and ``status="error"``).
        """
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose must be 'fine-tune' (files for training); got {purpose!r}", param="purpose")
        filename = _display_name(filename)
        file_id = new_id(FILE_PREFIX)
        path = self.path_of(file_id)
        size = self._write(content, path)
        findings, summary = (self._check(path, filename) if purpose == "fine-tune" else ([], None))
        now = time.time()
        errors = [f for f in findings if f["severity"] == "error"]
        row = {"id": file_id, "filename": filename, "purpose": purpose, "bytes": size, "created_at": now,
               "status": "error" if errors else "processed", "findings": findings, "summary": summary,
               "expires_at": now + expires_after_seconds if expires_after_seconds else None}
        try:
            self.store.insert_file(row)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return self._object(row)

    def get(self, file_id: str) -> StoredFile:
        """The file object; ``NotFound`` (``param="file_id"``) when there is none."""
        check_id(file_id, FILE_PREFIX)
        row = self.store.get_file(file_id)
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return self._object(row)

    def list(self, after: str | None = None, limit: int = 10000, order: str = "desc",
             purpose: str | None = None) -> Page[StoredFile]:
        """A page of files by ``created_at`` (``order`` ``desc`` or ``asc``), strictly after the file ``after``."""
        if order not in ("asc", "desc"):
            raise InvalidRequest(f"order must be 'asc' or 'desc', got {order!r}", param="order")
        _check_limit(limit, 10000)
        rows = [self._object(row) for row in self.store.list_files(purpose, order)]
        return paginate(rows, after, limit, key=lambda f: f.id, first_last=True)

    def content(self, file_id: str) -> bytes:
        """The file's bytes as uploaded."""
        self.get(file_id)
        try:
            return self.path_of(file_id).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"the content of {file_id} is gone from {self.directory}", param="file_id") from None

    def delete(self, file_id: str) -> dict[str, Any]:
        """Delete the file and its bytes; returns OpenAI's ``{"id", "object": "file", "deleted": true}``."""
        self.get(file_id)
        self.store.delete_file(file_id)
        self.path_of(file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def _write(self, content: bytes | IO[bytes], path: Path) -> int:
        """Write ``content`` to ``path`` atomically, refusing more than ``max_bytes`` as it streams."""
        def limited() -> Iterator[bytes]:
            size = 0
            for chunk in _chunks(content):
                size += len(chunk)
                if size > self.max_bytes:
                    raise PayloadTooLarge(f"the file is larger than the upload limit of {self.max_bytes:,} bytes",
                                          param="file")
                yield chunk

        return atomic_write_chunks(path, limited())

    def _check(self, path: Path, filename: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The data doctor's findings for ``path``, with the stored path replaced by the user's file name."""
        from tuneforge.data.validate import ValidationOptions, validate_data

        report = validate_data(path, ValidationOptions(min_examples=1))
        findings = []
        for finding in report.findings:
            findings.append({"severity": finding.severity, "code": finding.code,
                             "message": finding.message.replace(str(path), filename), "line": finding.line,
                             "field": finding.field})
        summary = {"format": report.data_format, "rows": report.stats.get("rows"),
                   "examples": report.stats.get("usable_examples"), "errors": report.error_count,
                   "warnings": report.warning_count}
        return findings, summary

    def _object(self, row: dict[str, Any]) -> StoredFile:
        return StoredFile(id=row["id"], filename=row["filename"], purpose=row["purpose"], bytes=int(row["bytes"]),
                          created_at=int(row["created_at"]), status=row["status"], findings=list(row["findings"] or []),
                          path=self.directory / f"{row['id']}.jsonl", summary=row["summary"],
                          expires_at=int(row["expires_at"]) if row["expires_at"] else None)


def _chunks(content: bytes | IO[bytes]):
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        for start in range(0, len(data), _CHUNK):
            yield data[start:start + _CHUNK]
        return
    while True:
        chunk = content.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def _display_name(filename: str | None) -> str:
    """The name shown for a file: its last path component, printable, at most 255 characters (never a path)."""
    name = str(filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:255]
    return name or "upload"


def _check_limit(limit: int, most: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidRequest(f"limit must be an integer from 1 to {most}, got {limit!r}", param="limit")
