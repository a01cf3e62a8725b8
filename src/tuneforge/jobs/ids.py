"""Ids of files, jobs, events and checkpoints: a fixed prefix and random hex, checked by a strict pattern.

An id that reaches a path (``$TUNEFORGE_HOME/files/<file-id>.jsonl``) is always checked first, so a
request can never name a file outside the store (``../``, ``/``, NUL and the like are refused).
"""

from __future__ import annotations

import re
import secrets

from tuneforge.jobs.errors import NotFound

FILE_PREFIX, JOB_PREFIX, EVENT_PREFIX, CHECKPOINT_PREFIX = "file-", "ftjob-", "ftevent-", "ftckpt_"
_HEX = 24  # hex digits after the prefix: 96 random bits
PATTERNS = {prefix: re.compile(rf"\A{re.escape(prefix)}[0-9a-f]{{{_HEX}}}\Z")
            for prefix in (FILE_PREFIX, JOB_PREFIX, EVENT_PREFIX, CHECKPOINT_PREFIX)}
KIND = {FILE_PREFIX: "File", JOB_PREFIX: "fine-tuning job", EVENT_PREFIX: "event", CHECKPOINT_PREFIX: "checkpoint"}
PARAM = {FILE_PREFIX: "file_id", JOB_PREFIX: "fine_tuning_job_id", EVENT_PREFIX: "after", CHECKPOINT_PREFIX: "after"}


def new_id(prefix: str) -> str:
    """A fresh id: ``prefix`` + 24 random hex digits."""
    return prefix + secrets.token_hex(_HEX // 2)


def is_valid(value: object, prefix: str) -> bool:
    return isinstance(value, str) and PATTERNS[prefix].match(value) is not None


def check_id(value: object, prefix: str, param: str | None = None) -> str:
    """``value`` if it is a well-formed id of that kind; else ``NotFound`` (no such object can exist)."""
    if not is_valid(value, prefix):
        shown = repr(value)[:80]
        raise NotFound(f"No such {KIND[prefix]} object: {shown} (ids look like {prefix}{'0' * _HEX})",
                       param=param or PARAM[prefix])
    return str(value)
