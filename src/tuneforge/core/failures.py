"""Unexpected failures: one message for the user, the traceback in a log file, special advice for out of memory.

A ``TuneforgeError`` already says what to fix. Anything else (a bug, out of memory, a broken
install) must not show the user a Python traceback either: ``describe_failure`` gives one message
that says what failed and what to try, and ``write_error_log`` keeps the traceback in the run
directory's ``error.log`` (when there is a run directory) or in ``$TUNEFORGE_HOME/logs/``.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from tuneforge.core.paths import atomic_write_text, tuneforge_home

ERROR_LOG = "error.log"
_LOG_ATTRIBUTE = "_tuneforge_error_log"  # set on an exception whose traceback is already logged

OUT_OF_MEMORY_ADVICE = (
    "the model, the batch and its activations do not fit in memory; try a smaller --micro-batch-tokens "
    "(e.g. 512: same result, less memory), --gradient-checkpointing (far less memory, about a third slower), "
    "a smaller --batch-size or --max-length, or a smaller model"
)

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` means memory ran out: ``MemoryError``, ``torch.OutOfMemoryError``, or an allocator's RuntimeError."""
    if isinstance(error, MemoryError) or type(error).__name__ in ("OutOfMemoryError", "OutOfMemory"):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in _OOM_MESSAGES)


def describe_failure(error: BaseException, doing: str = "the command") -> str:
    """One paragraph for the user: what failed and what to try (no traceback)."""
    what = f"{type(error).__name__}: {_first_line(error)}"
    if is_out_of_memory(error):
        return f"{doing} ran out of memory ({what}); {OUT_OF_MEMORY_ADVICE}"
    return f"{doing} failed unexpectedly ({what})"


def write_error_log(error: BaseException, run_dir: Path | None = None) -> Path | None:
    """Write ``error``'s traceback to ``run_dir/error.log`` or ``$TUNEFORGE_HOME/logs/error-<time>.log``; return the file.

    Called once per exception: a second call returns the file the first one wrote. Never raises (a
    full disk must not replace the original error); returns None when nothing could be written.
    """
    logged = logged_at(error)
    if logged is not None:
        return logged
    text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {describe_failure(error)}\n\n" + "".join(
        traceback.format_exception(type(error), error, error.__traceback__))
    targets = [run_dir / ERROR_LOG] if run_dir is not None else []
    targets.append(tuneforge_home() / "logs" / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6:06d}.log")
    for path in targets:
        try:
            atomic_write_text(path, text)
        except OSError:
            continue
        try:
            setattr(error, _LOG_ATTRIBUTE, path)
        except AttributeError:  # an exception type that refuses attributes; the log is written all the same
            pass
        return path
    return None


def logged_at(error: BaseException) -> Path | None:
    """The log file ``write_error_log`` wrote for ``error``, if any."""
    return getattr(error, _LOG_ATTRIBUTE, None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else "no message"
    return line if len(line) <= 300 else line[:297] + "..."
