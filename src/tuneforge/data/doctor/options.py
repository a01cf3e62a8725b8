"""``ValidationOptions``: what the data doctor checks, and how training will use the data (token counts, estimates)."""

from __future__ import annotations

import string
from dataclasses import dataclass

from tuneforge.core.errors import ConfigError
from tuneforge.data.row_formats import AUTO, ROW_FORMATS


@dataclass
class ValidationOptions:
    """What to check and how training will use the data (for token counts and estimates)."""

    data_format: str = "auto"
    text_template: str | None = None
    max_length: int = 512
    train_on_prompt: bool = False
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    epochs: float = 3.0
    validation_split: float = 0.1
    test_split: float = 0.1
    min_examples: int = 10
    near_duplicate_threshold: float | None = 0.85  # None turns the near-duplicate check off
    near_duplicate_max_rows: int | None = 100_000  # sketches kept for at most this many examples (None: all)
    max_findings_per_code: int | None = 1000  # findings kept in the report per code (None: all); all are counted
    check_sensitive: bool = True
    show_tokens: int = 0
    cost_per_hour: float | None = None

    def check(self) -> None:
        problems = []
        if self.data_format != AUTO:
            problem = ROW_FORMATS.problem(self.data_format, "format")
            if problem:
                problems.append(problem)
        if self.text_template is not None:
            problems += _template_problems(self.text_template)
        if self.max_length < 1:
            problems.append(f"max_length: must be at least 1, got {self.max_length}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            problems.append("batch_size and gradient_accumulation_steps must be at least 1")
        if self.near_duplicate_threshold is not None and not 0 < self.near_duplicate_threshold <= 1:
            problems.append(f"near_duplicate_threshold: must be in (0, 1], got {self.near_duplicate_threshold}")
        if not (0 <= self.validation_split < 1 and 0 <= self.test_split < 1 and self.validation_split + self.test_split < 1):
            problems.append("validation_split and test_split must be in [0, 1) and add up to less than 1")
        if problems:
            raise ConfigError(problems)


def _template_problems(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        return [f"text_template: {template!r} is not a valid template ({error}); write placeholders as {{column}}"]
    names = [name for _, name, _, _ in parsed if name is not None]
    if not names:
        return [f"text_template: {template!r} has no {{column}} placeholder"]
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        return [f"text_template: placeholders must be column names like {{question}}; got {{{bad[0]}}}"]
    return []


def template_columns(template: str) -> list[str]:
    return list(dict.fromkeys(name for _, name, _, _ in string.Formatter().parse(template) if name))
