"""``file:line`` helpers shared by the per-row and the whole-dataset checks."""

from __future__ import annotations

from typing import Any

from tuneforge.data import checks
from tuneforge.data.findings import Finding


def _where(at: checks.Location) -> str:
    return f"{at.file}:{at.line}" if at.line is not None else f"{at.file}:row {at.row}"


def _short_where(where: str, file: str) -> str:
    """``line 12`` when the other row is in the same file, else the full ``file:line``."""
    prefix = f"{file}:"
    return ("line " + where[len(prefix):]) if where.startswith(prefix) and where[len(prefix):].isdigit() else where


def _file_of(where: str | None) -> str:
    return (where or "").rsplit(":", 1)[0]


def _line_of(where: str | None) -> int | None:
    tail = (where or "").rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _first_line(locations: list[checks.Location]) -> int:
    return min((at.line or at.row or 0) for at in locations) if locations else 0


def _finding_order(item: Finding) -> tuple[Any, ...]:
    return (item.severity != "error", item.file, item.line or item.row or 0, item.code)
