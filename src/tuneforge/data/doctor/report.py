"""What the data doctor returns: ``ValidationReport`` (findings, counts, statistics), the rows it kept or dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tuneforge.core.errors import DatasetError
from tuneforge.data.examples import TrainingExample
from tuneforge.data.findings import Finding


@dataclass
class DroppedRow:
    """A row that ``skip_invalid`` leaves out, and why."""

    where: str
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "reasons": self.reasons}


@dataclass
class ValidationReport:
    """Everything the data doctor found. ``ok`` is True when there is no error (warnings allowed)."""

    path: str
    data_format: str | None
    findings: list[Finding]
    counts_by_code: dict[str, int]
    stats: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def error_count(self) -> int:
        return sum(n for code, n in self.counts_by_code.items() if _severity(code) == "error")

    @property
    def warning_count(self) -> int:
        return sum(n for code, n in self.counts_by_code.items() if _severity(code) == "warning")

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def omitted(self) -> dict[str, int]:
        """Findings counted but not listed (over ``max_findings_per_code``), per code."""
        listed = Counter(f.code for f in self.findings)
        return {code: n - listed[code] for code, n in self.counts_by_code.items() if n > listed[code]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.data_format, "ok": self.ok,
            "errors": self.error_count, "warnings": self.warning_count, "counts_by_code": self.counts_by_code,
            "findings": [f.to_dict() for f in self.findings], "omitted": self.omitted(),
            "stats": self.stats, "notes": self.notes, "samples": self.samples,
        }

    def raise_if_invalid(self) -> None:
        """Raise ``DatasetError`` listing every error when there is any."""
        if self.ok:
            return
        raise DatasetError(
            f"{self.error_count} error(s) in {self.path}; fix these rows (see every problem with "
            f"`tuneforge validate {self.path}`), or drop them with --skip-invalid:",
            [str(f) for f in self.errors],
        )


def _severity(code: str) -> str:
    from tuneforge.data.findings import CODES

    return CODES[code][0]


@dataclass
class KeptExample:
    """A usable example with the row it came from (``keep_examples``)."""

    split: int
    data_format: str
    example: TrainingExample
    row: dict[str, Any]
    where: str
    position: int  # line, or row number where lines mean nothing


@dataclass
class CheckedData:
    """Examples that passed validation, the report, and the rows left out (with ``skip_invalid``)."""

    examples: list[TrainingExample]
    data_format: str
    report: ValidationReport
    dropped: list[DroppedRow]
