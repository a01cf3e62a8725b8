"""The data doctor: read a dataset once, report every problem with file, line and field, and its statistics.

``validate_data(path)`` streams the rows (memory stays flat on a million-row file: about 40 bytes a
row for the duplicate checks, plus a 256-byte MinHash signature for each of the first
``near_duplicate_max_rows`` examples) and
returns a ``ValidationReport``: findings split into errors and warnings (``findings.CODES`` lists
every code), counts, length distributions, and — given the model's tokenizer — token counts with
the real chat template, truncation, the trained tokens and training estimates.

``load_checked(path)`` is the same pass keeping the examples: training refuses a file with errors,
or with ``skip_invalid`` drops the bad rows and says which.

The doctor lives in ``data/doctor/`` by concern: ``options`` (what to check), ``report`` (what it
returns), ``rows`` (the streaming per-row ``Validator``), ``dataset`` (duplicates, conflicts,
leakage between splits, balance, statistics), ``splits`` (finding the split files of a directory).
This module is the entry point and keeps every public name importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tuneforge.core.errors import DatasetError
from tuneforge.data.doctor.options import ValidationOptions, template_columns
from tuneforge.data.doctor.report import CheckedData, DroppedRow, KeptExample, ValidationReport
from tuneforge.data.doctor.rows import BENCHMARK_SAMPLE, READER_ROW_CODES, Validator
from tuneforge.data.doctor.splits import SPLIT_NAMES, find_splits

__all__ = ["BENCHMARK_SAMPLE", "CheckedData", "DroppedRow", "KeptExample", "READER_ROW_CODES", "SPLIT_NAMES",
           "ValidationOptions", "ValidationReport", "Validator", "find_splits", "load_checked", "raise_for_errors",
           "template_columns", "validate_data"]


def validate_data(path: str | Path, options: ValidationOptions | None = None, tokenizer: Any = None,
                  speed_probe: Callable[[list[Any]], dict[str, Any]] | None = None) -> ValidationReport:
    """Check ``path`` (a file, or a directory of split files) and return every problem and statistic.

    Args:
        path: a .jsonl/.json/.csv/.parquet file, a ``save_to_disk`` directory, or a directory with
            train/validation/test files (as ``tuneforge prepare`` writes).
        options: formats, max_length, batch size... (``ValidationOptions``).
        tokenizer: the model's tokenizer; with it lengths are counted in tokens with its chat
            template, and truncation and the end-of-turn token are checked.
        speed_probe: times training steps on a sample of the encoded examples, for the
            training-time estimate: ``probe(items) -> {"tokens_per_second", "steps"}``;
            ``tuneforge.train.estimate.training_speed_probe`` builds one on the real training path.

    Returns:
        A ``ValidationReport``; it never raises for anything in the data.

    Raises:
        ConfigError: the options themselves are invalid (unknown format, malformed template).
    """
    validator = Validator(options, tokenizer, speed_probe=speed_probe)
    for split, file in find_splits(path):
        validator.add_file(file, split)
    return validator.finish()


def load_checked(path: str | Path, options: ValidationOptions | None = None, tokenizer: Any = None,
                 skip_invalid: bool = False) -> CheckedData:
    """Validate ``path`` and return its examples, in one pass.

    Raises ``DatasetError`` listing every error, unless ``skip_invalid``: then rows with errors are
    dropped and listed in ``dropped`` (file:line and reasons). Errors no dropping can fix (a missing
    or empty file, wrong CSV columns, fewer than the minimum examples left) still raise.
    """
    validator = Validator(options, tokenizer, keep_examples=True)
    validator.add_file(path, "train")
    report = validator.finish()
    raise_for_errors(report, validator, skip_invalid)
    examples = [kept.example for kept in validator.examples]
    return CheckedData(examples, report.data_format or "auto", report, list(validator.dropped.values()))


def raise_for_errors(report: ValidationReport, validator: Validator, skip_invalid: bool = False) -> None:
    """Raise ``DatasetError`` for the report's errors: all of them, or with ``skip_invalid`` only those
    that dropping rows cannot fix (``validator.fatal``: a missing file, wrong columns, too few examples)."""
    if report.ok:
        return
    fatal = [f for f in report.errors if f in validator.fatal]
    if skip_invalid and fatal:
        raise DatasetError(f"{report.path}: cannot train even without the invalid rows:", [str(f) for f in fatal])
    if not skip_invalid:
        report.raise_if_invalid()
