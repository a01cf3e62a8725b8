"""The status of a run, in one vocabulary for the pipeline, ``results.json``, events, the CLI, jobs and the server.

The words are OpenAI's fine-tuning job statuses, plus ``interrupted`` (paused): a run stopped at a
step boundary with a checkpoint, by a signal or by ``FineTuningPipeline.request_stop``, that
``tuneforge resume`` continues exactly.

    validating_files -> queued -> running -> succeeded | failed | cancelled | interrupted
                                     ^                                            |
                                     +------------------ resume ------------------+

``RunStatus`` is a ``str`` enum: its members compare equal to their plain strings and serialise to
them in JSON, so ``results.json`` and events hold ``"succeeded"``, never an enum repr.
"""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """Where a run (or a job holding one) stands."""

    VALIDATING_FILES = "validating_files"  # the data is being checked; nothing trained yet
    QUEUED = "queued"  # accepted, waiting for a worker (jobs)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an error ended it; see the run's ``error`` (and error.log)
    CANCELLED = "cancelled"  # stopped at once (a second signal, or a cancel outside training); may still resume
    INTERRUPTED = "interrupted"  # paused: stopped at a step boundary with a checkpoint; resume continues exactly

    def __str__(self) -> str:  # f-strings and str() give the word, as str does
        return self.value

    @property
    def is_terminal(self) -> bool:
        """Whether nothing more will happen to the run by itself (it may still be resumed)."""
        return self in TERMINAL

    @property
    def can_resume(self) -> bool:
        """Whether ``tuneforge resume`` may continue the run (everything but a finished success or a live run)."""
        return self in RESUMABLE


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})
RESUMABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})

VALIDATING_FILES = RunStatus.VALIDATING_FILES
QUEUED = RunStatus.QUEUED
RUNNING = RunStatus.RUNNING
SUCCEEDED = RunStatus.SUCCEEDED
FAILED = RunStatus.FAILED
CANCELLED = RunStatus.CANCELLED
INTERRUPTED = RunStatus.INTERRUPTED


def parse_status(value: object) -> RunStatus | None:
    """The status a stored value (``results.json``, an event) names; None for a missing or unknown word."""
    try:
        return RunStatus(value)
    except ValueError:
        return None


def is_terminal(value: object) -> bool:
    """``RunStatus.is_terminal`` for a stored value; an unknown word is not terminal."""
    status = parse_status(value)
    return status is not None and status.is_terminal


def can_resume(value: object) -> bool:
    """``RunStatus.can_resume`` for a stored value; an unknown or missing status (a killed run) can resume."""
    status = parse_status(value)
    return status is None or status.can_resume
