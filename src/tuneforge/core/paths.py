"""Where tuneforge keeps things on disk, and how to write files so a crash never leaves half of one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable


def tuneforge_home() -> Path:
    """The cache root: ``$TUNEFORGE_HOME``, else ``~/.cache/tuneforge``."""
    return Path(os.environ.get("TUNEFORGE_HOME") or Path.home() / ".cache" / "tuneforge")


def read_json_object(path: Path, fix: str) -> dict[str, Any]:
    """The JSON object in ``path``; a damaged file raises ``CheckpointError`` naming it and saying ``fix``."""
    from tuneforge.core.errors import CheckpointError

    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}; {fix}") from None
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} is damaged (not valid JSON: {error}); {fix}") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} is damaged (it holds a {type(loaded).__name__}, not an object); {fix}")
    return loaded


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename inside it survives a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_chunks(path: Path, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``path`` through a temporary file, fsync and a rename; return the bytes written.

    Readers see the old file or the new one, never half of it. If iterating ``chunks`` raises (a
    size limit, a broken upload), the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                size += len(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return size


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_chunks`` of ``text`` as UTF-8."""
    atomic_write_chunks(path, [text.encode("utf-8")])


def atomic_write_json(path: Path, data: Any) -> None:
    """``atomic_write_text`` of pretty-printed JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def publish_directory(staging: Path, final: Path) -> None:
    """Move a fully written ``staging`` directory to ``final`` in one rename.

    Every file inside is fsynced first. An existing ``final`` is replaced only after the new one is
    complete, so a crash leaves either the old directory or the new one.
    """
    for file in staging.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    fsync_dir(final.parent)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks), or of a directory's files in sorted path order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
