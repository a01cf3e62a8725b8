"""Strict shapes of the ids that arrive in paths and bodies; nothing else is ever looked up.

Ids are matched whole (``fullmatch``) against these patterns before any store is asked, so a
path-traversal payload (``../``, ``%2e%2e``, ``\\``, NUL) is a 404 without touching the disk. File
names given by clients are stored as data only; files live under server-chosen names.
"""

from __future__ import annotations

import re

FILE_ID = re.compile(r"file-[A-Za-z0-9]{1,64}")
JOB_ID = re.compile(r"ftjob-[A-Za-z0-9]{1,64}")
EVENT_ID = re.compile(r"ft-?event-[A-Za-z0-9]{1,64}")
CHECKPOINT_ID = re.compile(r"ftckpt_[A-Za-z0-9]{1,64}")
# Model ids: a base model's served name, or ft:<base>:<suffix>:<job>[:ckpt-step-N]. No "..", no
# backslash, no leading slash; "/" allowed inside (HF-style names such as org/name).
MODEL_ID = re.compile(r"(?!.*\.\.)(?!/)[A-Za-z0-9_.:@+/=-]{1,256}")


def is_file_id(value: str) -> bool:
    return bool(FILE_ID.fullmatch(value))


def is_job_id(value: str) -> bool:
    return bool(JOB_ID.fullmatch(value))


def is_model_id(value: str) -> bool:
    return bool(MODEL_ID.fullmatch(value)) and not value.endswith("/") and "//" not in value


def is_cursor(value: str) -> bool:
    """An ``after=`` cursor: any of the id shapes above."""
    return any(p.fullmatch(value) for p in (FILE_ID, JOB_ID, EVENT_ID, CHECKPOINT_ID)) or is_model_id(value)
