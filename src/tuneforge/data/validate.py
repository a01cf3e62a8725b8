"""The data doctor: read a dataset once, report every problem with file, line and field, and its statistics.

``validate_data(path)`` streams the rows (memory stays flat on a million-row file: about 40 bytes a
row for the duplicate checks, plus a 256-byte MinHash signature for each of the first
``near_duplicate_max_rows`` examples) and
returns a ``ValidationReport``: findings split into errors and warnings (``findings.CODES`` lists
every code), counts, length distributions, and — given the model's tokenizer — token counts with
the real chat template, truncation, the trained tokens and training estimates.

``load_checked(path)`` is the same pass keeping the examples: training refuses a file with errors,
or with ``skip_invalid`` drops the bad rows and says which.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tuneforge.core.tokens import END_OF_TURN_MARKERS
from tuneforge.core.errors import ConfigError, DatasetError
from tuneforge.data import checks
from tuneforge.data.dedup import BatchNearDuplicates, KeyColumns, duplicate_groups, example_keys
from tuneforge.data.examples import TrainingExample
from tuneforge.data.findings import Finding, finding
from tuneforge.data.row_formats import AUTO, ROW_FORMATS, detect_row_format, expected_columns, get_format, registered_formats
from tuneforge.data.stats import (IMBALANCE_RATIO, Distribution, LabelCounter, SystemPrompts, estimate_training,
                                  measure_training_speed, split_sizes, steps_per_epoch)
from tuneforge.data.stream import Columns, Item, SourceRow, iter_file
from tuneforge.data.tokenize import IGNORE_INDEX, encode_example

SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
               "dev": "validation", "test": "test"}
READER_ROW_CODES = {"encoding", "invalid_json", "json_too_deep", "line_too_long", "csv_row"}
BENCHMARK_SAMPLE = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


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
class _FileState:
    path: Path
    split: int
    fixed_format: str | None
    rows: int = 0
    stopped: bool = False
    formats: dict[str, list[Any]] = field(default_factory=dict)  # format -> [count, first locations]
    unused: dict[str, list[Any]] = field(default_factory=dict)  # column -> [count, first Location]


class Validator:
    """One streaming pass over one or more files (one per split). Use ``validate_data``, or for several
    files ``add_file`` each, then ``finish``."""

    def __init__(self, options: ValidationOptions | None = None, tokenizer: Any = None, keep_examples: bool = False,
                 benchmark_model: Any = None) -> None:
        self.options = options or ValidationOptions()
        self.options.check()
        self.tokenizer = tokenizer
        self.keep_examples = keep_examples
        self.benchmark_model = benchmark_model
        self.template_fields = template_columns(self.options.text_template) if self.options.text_template else None
        self.findings: list[Finding] = []
        self.code_counts: Counter[str] = Counter()
        self.fatal: list[Finding] = []
        self.notes: list[str] = []
        self.splits: list[str] = []
        self.files: list[str] = []
        self.rows = 0
        self.usable: Counter[int] = Counter()
        self.formats_used: Counter[str] = Counter()
        self.keys = KeyColumns()
        self.labels = LabelCounter()
        self.systems = SystemPrompts()
        self.lengths = {"prompt": Distribution(), "completion": Distribution(), "example": Distribution()}
        self.tokens = Counter()  # total, trained, truncated_examples, truncated_tokens, end_of_turn_not_trained ...
        threshold = self.options.near_duplicate_threshold
        self.near = BatchNearDuplicates(threshold) if threshold else None
        self.examples: list[KeptExample] = []  # when keep_examples
        self.dropped: dict[str, DroppedRow] = {}
        self.samples: list[dict[str, Any]] = []
        self.bench_items: list[Any] = []
        self._rng = random.Random(0)
        self._end_of_turn = _end_of_turn_ids(tokenizer) if tokenizer is not None else []
        self._accepted = 0  # examples accepted so far: the index of the next one

    # ------------------------------------------------------------------ reporting

    def _emit(self, item: Finding, row_level: bool = False) -> None:
        self.code_counts[item.code] += 1
        cap = self.options.max_findings_per_code
        if cap is None or self.code_counts[item.code] <= cap:
            self.findings.append(item)
        if item.severity == "error":
            if row_level and self.keep_examples:
                self.dropped.setdefault(item.where, DroppedRow(item.where, [])).reasons.append(f"{item.code}: {item.message}")
            elif not row_level:
                self.fatal.append(item)

    # ------------------------------------------------------------------ reading

    def add_file(self, path: str | Path, split: str = "train") -> None:
        """Stream every row of ``path`` into the checks, as the rows of ``split``."""
        self.add_items(iter_file(path), path, split)

    def add_items(self, items: Iterable[Item], path: str | Path, split: str = "train") -> None:
        """Check a stream of ``stream.iter_file`` items (rows may have been cleaned on the way) read from ``path``."""
        file = Path(path)
        if split not in self.splits:
            self.splits.append(split)
            self.files.append(str(file))
        state = _FileState(file, self.splits.index(split), self._fixed_format())
        is_json = file.suffix.lower() == ".json"
        for item in items:
            if state.stopped:
                break
            if isinstance(item, Finding):
                self._emit(item, row_level=item.code in READER_ROW_CODES and not is_json)
            elif isinstance(item, Columns):
                self._check_columns(item, state)
            else:
                self._row(item, state)
        self._finish_file(state)

    def _fixed_format(self) -> str | None:
        if self.template_fields is not None:
            return "text_template"
        return None if self.options.data_format == "auto" else self.options.data_format

    def _check_columns(self, columns: Columns, state: _FileState) -> None:
        """A CSV header or parquet schema that fits no format is one error, not one per row."""
        names = columns.names
        code = "csv_columns" if columns.line is not None else "parquet_schema"
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            self._emit(finding(code, f"the header repeats column(s) {duplicates}; give each column one name",
                               state.path, columns.line))
            state.stopped = True
            return
        needed = self.template_fields if self.template_fields is not None else (
            list(get_format(state.fixed_format).keys) if state.fixed_format else None)
        if needed is not None:
            missing = [name for name in needed if name not in names]
            if missing:
                self._emit(finding(code, f"no column(s) {missing}, which the {state.fixed_format} format needs; "
                                   f"columns found: {names}", state.path, columns.line, field=missing[0]))
                state.stopped = True
        elif detect_row_format(dict.fromkeys(names)) is None:
            expected = expected_columns()
            self._emit(finding(code, f"columns {names} fit no known format; expected one of — {expected} — "
                               "or pass --text-template '{column} ...'", state.path, columns.line))
            state.stopped = True
        if columns.types and not state.stopped:
            self._check_types(columns, state)

    def _check_types(self, columns: Columns, state: _FileState) -> None:
        data_format = state.fixed_format or detect_row_format(dict.fromkeys(columns.names))
        spec = get_format(data_format) if data_format and self.template_fields is None else None
        for name, arrow_type in (columns.types or {}).items():
            if self.template_fields is not None:
                fits = name not in self.template_fields or not arrow_type.startswith(("list", "large_list", "struct", "map"))
                expected = None if fits else "string"
            else:
                expected = spec.column_problem(name, arrow_type) if spec is not None else None
            if expected is not None:
                self._emit(finding("parquet_schema", f"column '{name}' has type {arrow_type}; expected {expected}",
                                   state.path, field=name))
                state.stopped = True

    # ------------------------------------------------------------------ one row

    def _row(self, item: SourceRow, state: _FileState) -> None:
        self.rows += 1
        state.rows += 1
        at = checks.Location(str(state.path), item.line, item.row)
        data = item.data
        if not isinstance(data, dict):
            self._emit(at("data_type", f"each row must be a JSON object, got {checks.describe_type(data)}"), row_level=True)
            return
        data_format = state.fixed_format or detect_row_format(data) or _closest_format(data, state)
        if data_format is None:
            expected = expected_columns()
            found = sorted(str(key) for key in data)[:10]
            self._emit(at("unknown_format", f"no known format (found keys {found}); each row needs one of — {expected} — "
                          "or pass --text-template '{column} ...'"), row_level=True)
            return
        seen = state.formats.setdefault(data_format, [0, []])
        seen[0] += 1
        if len(seen[1]) < (self.options.max_findings_per_code or 10**12):
            seen[1].append(at)
        problems = self._row_checks(data, data_format, at, state)
        for problem in problems:
            self._emit(problem, row_level=True)
        if any(p.severity == "error" for p in problems):
            return
        example = self._convert(data, data_format, at)
        if example is None:
            return
        if self._check_texts(data, data_format, at):
            return
        encoded = self._encode(example, at)
        if encoded is False:
            return
        self._accept(data, example, encoded, at, state, data_format)

    def _row_checks(self, data: dict[str, Any], data_format: str, at: checks.Location, state: _FileState) -> list[Finding]:
        if self.template_fields is not None:
            problems = checks.check_template_row(data, self.template_fields, at)
        else:
            problems = get_format(data_format).check(data, at)
        for key in checks.unused_keys(data, data_format, self.template_fields):
            entry = state.unused.setdefault(key, [0, at])
            entry[0] += 1
        return problems

    def _convert(self, data: dict[str, Any], data_format: str, at: checks.Location) -> TrainingExample | None:
        """The loader's own conversion, so a row the doctor passes is a row training accepts."""
        problems: list[str] = []
        where = _where(at)
        try:
            if self.template_fields is not None:
                values = {name: str(data[name]) for name in self.template_fields}
                example: TrainingExample | None = TrainingExample(text=self.options.text_template.format(**values),  # type: ignore[union-attr]
                                                                  metadata=_metadata(data), source=where)
            else:
                example = get_format(data_format).convert(data, where, problems)
        except Exception as error:  # a converter bug must still be a finding, not a traceback
            problems.append(f"{where}: {type(error).__name__}: {error}")
            example = None
        for problem in problems:
            self._emit(at("invalid_row", problem.removeprefix(f"{where}: ")), row_level=True)
        return example if not problems else None

    def _check_texts(self, data: dict[str, Any], data_format: str, at: checks.Location) -> bool:
        """Text that cannot be encoded (lone surrogates from JSON escapes) is an error; secrets are warnings."""
        bad = False
        for field_name, text in _row_texts(data, data_format, self.template_fields):
            if _SURROGATE.search(text):
                self._emit(at("encoding", "contains an invalid Unicode escape (a lone surrogate such as \\ud800)",
                              field_name), row_level=True)
                bad = True
                continue
            if self.options.check_sensitive:
                for code, kind, masked in checks.scan_sensitive(text):
                    self._emit(at(code, f"likely {kind} ({masked}); remove or mask it before training", field_name))
        return bad

    def _encode(self, example: TrainingExample, at: checks.Location) -> Any:
        """Token ids and labels with the model's chat template (None without a tokenizer, False on failure)."""
        if self.tokenizer is None:
            return None
        try:
            return encode_example(self.tokenizer, example, max_length=10**9, train_on_prompt=False)
        except Exception as error:  # jinja TemplateError, tokenizer errors: the template refuses this row
            message = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            self._emit(at("chat_template_error", f"the model's chat template cannot render this example ({message})"),
                       row_level=True)
            return False

    # ------------------------------------------------------------------ a usable example

    def _accept(self, data: dict[str, Any], example: TrainingExample, encoded: Any, at: checks.Location,
                state: _FileState, data_format: str) -> None:
        index = self._accepted
        self._accepted += 1
        where = _where(at)
        self.usable[state.split] += 1
        self.formats_used[data_format] += 1
        whole, prompt, answer, text = example_keys(example)
        self.keys.add(whole, prompt, answer, at.line if at.line is not None else -(at.row or 0), state.split)
        self.labels.add(data, example, state.split)
        self.systems.add(example, where)
        if encoded is None:
            self._count_characters(example)
        else:
            self._count_tokens(example, encoded, at)
        if self.near is not None and (self.options.near_duplicate_max_rows is None or index < self.options.near_duplicate_max_rows):
            self.near.add(index, text)
        if self.keep_examples:
            self.examples.append(KeptExample(state.split, data_format, example, data, where, at.line or at.row or 0))

    def _count_characters(self, example: TrainingExample) -> None:
        if example.is_text:
            prompt, completion = 0, len(example.text or "")
        else:
            prompt = sum(len(m["content"]) for m in example.prompt_messages)
            completion = len(example.output)
        self.lengths["prompt"].add(prompt)
        self.lengths["completion"].add(completion)
        self.lengths["example"].add(sum(len(m["content"]) for m in example.messages) if not example.is_text else completion)

    def _count_tokens(self, example: TrainingExample, encoded: Any, at: checks.Location) -> None:
        limit = self.options.max_length
        total = len(encoded.input_ids)
        trained_all = sum(1 for label in encoded.labels if label != IGNORE_INDEX)
        self.lengths["prompt"].add(total - trained_all)
        self.lengths["completion"].add(trained_all)
        self.lengths["example"].add(total)
        kept_labels = encoded.labels[:limit]
        trained = min(total, limit) if self.options.train_on_prompt else sum(1 for x in kept_labels if x != IGNORE_INDEX)
        self.tokens["total"] += min(total, limit)
        self.tokens["trained"] += trained
        self.tokens["examples"] += 1
        if total > limit:
            cut = total - limit
            cut_trained = trained_all - sum(1 for x in kept_labels if x != IGNORE_INDEX)
            self.tokens["truncated_examples"] += 1
            self.tokens["truncated_tokens"] += cut
            self._emit(at("too_long", f"{total} tokens, longer than max_length={limit}: the last {cut} would be cut "
                          f"({cut_trained} of them trained answer tokens); raise --max-length or shorten it"))
            if trained == 0:
                self._emit(at("no_trained_tokens", f"nothing left to learn within max_length={limit} (the answer starts "
                              f"after token {limit}); the example would be dropped"))
        elif self._end_of_turn:
            turns = 1 if example.is_text else sum(1 for m in example.messages if m["role"] == "assistant" and m.get("weight", 1) == 1)
            trained_ends = sum(1 for i, x in zip(encoded.input_ids, encoded.labels) if x != IGNORE_INDEX and i in self._end_of_turn)
            if turns and trained_ends < turns:
                self.tokens["end_of_turn_not_trained"] += 1
                self._emit(at("end_of_turn_not_trained", "the end-of-turn token after an answer is not trained, so the "
                              "model may not learn to stop; check the chat template"))
        if len(self.samples) < self.options.show_tokens:
            self.samples.append(_token_sample(self.tokenizer, encoded, _where(at), limit, self._end_of_turn))
        self._sample_for_benchmark(encoded, limit)

    def _sample_for_benchmark(self, encoded: Any, limit: int) -> None:
        """A reservoir sample of encoded examples, for the training-speed micro-benchmark."""
        if self.benchmark_model is None:
            return
        from tuneforge.data.tokenize import EncodedExample

        seen = self.tokens["examples"]
        item = EncodedExample(encoded.input_ids[:limit], encoded.labels[:limit])
        if len(self.bench_items) < BENCHMARK_SAMPLE:
            self.bench_items.append(item)
        else:
            slot = self._rng.randrange(seen)
            if slot < BENCHMARK_SAMPLE:
                self.bench_items[slot] = item

    def _finish_file(self, state: _FileState) -> None:
        if len(state.formats) > 1:
            majority = max(state.formats, key=lambda name: (state.formats[name][0], -_first_line(state.formats[name][1])))
            counts = ", ".join(f"{name}: {entry[0]} rows" for name, entry in state.formats.items())
            for name, (count, locations) in state.formats.items():
                if name == majority:
                    continue
                first = _where(state.formats[majority][1][0]) if state.formats[majority][1] else str(state.path)
                for at in locations:
                    self._emit(at("mixed_formats", f"this row is in {name} format but most rows are {majority} "
                                  f"(first at {first}); the rows mix formats ({counts}): use one format per file"),
                               row_level=True)
                self.code_counts["mixed_formats"] += count - len(locations)
            if self.keep_examples:
                self.examples = [kept for kept in self.examples if kept.split != state.split or kept.data_format == majority]
        for key, (count, at) in sorted(state.unused.items()):
            self._emit(at("unused_field", f"column '{key}' is not used by the format and is ignored "
                          f"({count} row(s) have it); rename it, or use --text-template", key))

    # ------------------------------------------------------------------ the whole dataset

    def finish(self) -> ValidationReport:
        """Dataset-wide checks (duplicates, conflicts, balance, system prompts, size) and statistics."""
        table = self.keys.table()
        duplicates = self._duplicates(table)
        conflicts = self._conflicts(table)
        near = self._near_duplicates(table)
        label_stats = self._label_balance()
        self._system_prompt_consistency()
        usable_train = self.usable[0] if self.splits else 0
        if not self.fatal and usable_train < self.options.min_examples:
            self._emit(finding("too_few_examples", f"only {usable_train} usable example(s); at least "
                               f"{self.options.min_examples} are needed (50-100 good ones usually help much more)",
                               self.files[0] if self.files else ""))
        stats = self._stats(table, duplicates, conflicts, near, label_stats)
        self.findings.sort(key=_finding_order)
        data_format = self.formats_used.most_common(1)[0][0] if self.formats_used else self._fixed_format()
        path = self.files[0] if len(self.files) == 1 else str(Path(self.files[0]).parent) if self.files else ""
        return ValidationReport(path, data_format, self.findings, dict(sorted(self.code_counts.items())), stats,
                                self.notes, self.samples)

    def _where_of(self, table_row: Any) -> tuple[str, int | None, int | None]:
        split, position = int(table_row[4]), int(table_row[3])
        return self.files[split], (position if position > 0 else None), (-position if position <= 0 else None)

    def _duplicates(self, table: Any) -> int:
        count = 0
        for group in duplicate_groups(table[:, 0]):
            first = table[group[0]]
            first_file, first_line, first_row = self._where_of(first)
            first_where = f"{first_file}:{first_line}" if first_line is not None else f"{first_file}:row {first_row}"
            for index in group[1:]:
                file, line, row = self._where_of(table[index])
                count += 1
                if table[index][4] != first[4]:
                    self._emit(finding("split_leakage", f"the same example is in {self.splits[int(first[4])]} "
                                       f"({first_where}); an example must be in one split only", file, line, row,
                                       related=[first_line or first_row or 0]))
                else:
                    self._emit(finding("duplicate", f"exact duplicate of {_short_where(first_where, file)}; "
                                       "remove it (tuneforge prepare --dedup)", file, line, row,
                                       related=[first_line or first_row or 0]))
        return count

    def _conflicts(self, table: Any) -> int:
        import numpy as np

        count = 0
        for group in duplicate_groups(table[:, 1]):
            answers = table[group, 2]
            if len(np.unique(answers)) < 2 or table[group[0], 1] == table[group[0], 0]:
                continue
            count += 1
            file, line, row = self._where_of(table[group[0]])
            places = [self._where_of(table[i]) for i in group]
            lines = [p[1] if p[1] is not None else p[2] for p in places]
            shown = ", ".join(str(n) for n in lines[:10]) + (" ..." if len(lines) > 10 else "")
            self._emit(finding("conflicting_outputs", f"the same input has {len(np.unique(answers))} different outputs "
                               f"(lines {shown}); make the answers agree or the model learns to guess", file, line, row,
                               related=[n or 0 for n in lines[1:50]]))
        return count

    def _near_duplicates(self, table: Any) -> int:
        count = 0
        for later, earlier, similarity in (self.near.pairs() if self.near is not None else []):
            if table[later][0] == table[earlier][0]:
                continue  # exact copies are reported as duplicates
            count += 1
            file, line, row = self._where_of(table[later])
            first_file, first_line, first_row = self._where_of(table[earlier])
            first_where = f"{first_file}:{first_line}" if first_line is not None else f"{first_file}:row {first_row}"
            if table[later][4] != table[earlier][4]:
                self._emit(finding("split_leakage", f"nearly the same example (similarity {similarity:.2f}) is in "
                                   f"{self.splits[int(table[earlier][4])]} ({first_where})", file, line, row,
                                   related=[first_line or first_row or 0]))
            else:
                self._emit(finding("near_duplicate", f"nearly the same as {_short_where(first_where, file)} (similarity "
                                   f"{similarity:.2f}); remove it (tuneforge prepare --near-dup "
                                   f"{self.options.near_duplicate_threshold})", file, line, row,
                                   related=[first_line or first_row or 0]))
        limit = self.options.near_duplicate_max_rows
        if self.near is not None and limit is not None and len(table) > limit:
            self.notes.append(f"near duplicates were searched among the first {limit:,} of {len(table):,} examples")
        return count

    def _label_balance(self) -> dict[str, Any] | None:
        source, counts = self.labels.labels()
        if source is None:
            return None
        totals: Counter[str] = Counter()
        by_split: dict[str, dict[str, int]] = {}
        for (split, label), count in counts.items():
            totals[label] += count
            by_split.setdefault(self.splits[split], {})[label] = count
        if len(totals) >= 2:
            (top, most), (rare, least) = totals.most_common(1)[0], min(totals.items(), key=lambda kv: (kv[1], kv[0]))
            if most >= IMBALANCE_RATIO * least:
                self._emit(finding("label_imbalance", f"label '{top}' has {most} examples but '{rare}' only {least} "
                                   f"({most / least:.0f}x); add examples of the rare labels, or balance them "
                                   "(tuneforge prepare --balance oversample)", self.files[0],
                                   field="label" if source == "label field" else "output"))
        return {"source": source, "counts": dict(totals.most_common()), "by_split": by_split}

    def _system_prompt_consistency(self) -> None:
        systems = self.systems
        if systems.with_system and systems.without:
            self._emit(finding("inconsistent_system_prompt", f"{systems.with_system} example(s) have a system prompt and "
                               f"{systems.without} have none (this is the first without); use the same system "
                               "prompt in training and at inference", _file_of(systems.first_without),
                               _line_of(systems.first_without)))
        variants = sorted(systems.variants.values(), key=lambda v: -v[0])
        if 2 <= len(variants) <= 10 and variants[0][0] >= 0.5 * systems.with_system:
            main = variants[0]
            for count, where, preview in variants[1:]:
                self._emit(finding("inconsistent_system_prompt", f"system prompt {preview!r} ({count} example(s), first "
                                   f"at {where}) differs from the one most examples use ({main[0]}: {main[2]!r})",
                                   _file_of(where), _line_of(where)))
        elif len(variants) > 10:
            self.notes.append(f"{len(variants)}{'+' if systems.overflow else ''} distinct system prompts")

    def _stats(self, table: Any, duplicates: int, conflicts: int, near: int, labels: dict[str, Any] | None) -> dict[str, Any]:
        import numpy as np

        options = self.options
        usable = sum(self.usable.values())
        if len(self.splits) > 1:
            splits = {name: self.usable[index] for index, name in enumerate(self.splits)}
            estimated = False
        else:
            groups = len(np.unique(table[:, 1])) if len(table) else 0
            splits = split_sizes(usable, groups, options.validation_split, options.test_split)
            estimated = True
        train = splits.get("train", 0)
        unit = "tokens" if self.tokenizer is not None else "characters"
        stats: dict[str, Any] = {
            "files": dict(zip(self.splits, self.files)), "rows": self.rows, "usable_examples": usable,
            "invalid_rows": self.rows - usable, "formats": dict(self.formats_used),
            "splits": {**splits, "estimated": estimated},
            "labels": labels,
            "lengths": {"unit": unit, **{name: d.summary() for name, d in self.lengths.items()},
                        "histogram": self.lengths["example"].histogram()},
            "duplicates": {"exact": duplicates, "near": near, "conflicting_inputs": conflicts,
                           "near_checked": self.near.count if self.near else 0},
            "system_prompts": {"distinct": len(self.systems.variants), "with": self.systems.with_system,
                               "without": self.systems.without},
        }
        per_epoch = steps_per_epoch(train, options.batch_size, options.gradient_accumulation_steps)
        training: dict[str, Any] = {"batch_size": options.batch_size,
                                    "gradient_accumulation_steps": options.gradient_accumulation_steps,
                                    "epochs": options.epochs, "train_examples": train, "steps_per_epoch": per_epoch,
                                    "total_steps": int(np.ceil(per_epoch * options.epochs))}
        if self.tokenizer is not None:
            share = train / usable if usable else 0.0
            stats["tokens"] = {"max_length": options.max_length, "total": self.tokens["total"],
                               "trained": self.tokens["trained"], "truncated_examples": self.tokens["truncated_examples"],
                               "truncated_tokens": self.tokens["truncated_tokens"],
                               "end_of_turn_not_trained": self.tokens["end_of_turn_not_trained"],
                               "end_of_turn_ids": self._end_of_turn}
            training["tokens_per_epoch"] = round(self.tokens["total"] * share)
            training["trained_tokens_per_epoch"] = round(self.tokens["trained"] * share)
            training["estimate"] = self._estimate(training["tokens_per_epoch"])
        else:
            self.notes.append("lengths are in characters; pass --model to count tokens with the model's tokenizer "
                              "and chat template (truncation, trained tokens, estimates)")
        stats["training"] = training
        return stats

    def _estimate(self, tokens_per_epoch: int) -> dict[str, Any] | None:
        if self.benchmark_model is None or not self.bench_items:
            return None
        pad = getattr(self.tokenizer, "pad_token_id", None)
        pad = pad if pad is not None else (self._end_of_turn[0] if self._end_of_turn else 0)
        speed = measure_training_speed(self.benchmark_model, self.bench_items, self.options.batch_size, pad)
        estimate = estimate_training(tokens_per_epoch, self.options.epochs, speed["tokens_per_second"], self.options.cost_per_hour)
        return {**estimate, "tokens_per_second": speed["tokens_per_second"], "measured_steps": speed["steps"],
                "cost_per_hour": self.options.cost_per_hour}


# ---------------------------------------------------------------------- helpers


def _closest_format(data: dict[str, Any], state: _FileState) -> str | None:
    """For a row with none of the full column sets: the file's format so far, else the format whose columns
    it has most of — so ``{"input": "x"}`` is reported as missing 'output', not as an unknown format."""
    if state.formats:
        return max(state.formats, key=lambda name: state.formats[name][0])
    scores = {spec.name: sum(key in data for key in spec.keys) for spec in registered_formats()}
    best = max(scores, key=lambda name: scores[name])
    return best if scores[best] else None


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


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    meta = data.get("metadata")
    return dict(meta) if isinstance(meta, dict) else {}


def _row_texts(data: dict[str, Any], data_format: str, template_fields: list[str] | None) -> list[tuple[str, str]]:
    """``(field, text)`` of every text the example is made of, named as in the file."""
    from tuneforge.data.clean import field_name, get_path, text_fields

    return [(field_name(path), get_path(data, path)) for path in text_fields(data, data_format, template_fields)]


def _end_of_turn_ids(tokenizer: Any) -> list[int]:
    """EOS plus the chat end markers the vocabulary has (the tokens that must be trained to learn to stop)."""
    ids = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
    for marker in END_OF_TURN_MARKERS:
        try:
            token_id = tokenizer.convert_tokens_to_ids(marker)
        except Exception:  # tokenizers without this vocabulary lookup
            continue
        if isinstance(token_id, int) and token_id != getattr(tokenizer, "unk_token_id", None) and token_id not in ids:
            ids.append(token_id)
    return ids


def _token_sample(tokenizer: Any, encoded: Any, where: str, limit: int, end_of_turn: list[int]) -> dict[str, Any]:
    """The example as spans of text, each marked trained or not, for ``--show-tokens``."""
    spans: list[dict[str, Any]] = []
    ids, labels = encoded.input_ids, encoded.labels
    start = 0
    for index in range(1, len(ids) + 1):
        boundary = index == len(ids) or (labels[index] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX) or index == limit
        if boundary:
            text = tokenizer.decode(ids[start:index], skip_special_tokens=False)
            spans.append({"text": text, "trained": labels[start] != IGNORE_INDEX and start < limit, "cut": start >= limit,
                          "tokens": index - start})
            start = index
    trained_end = any(x != IGNORE_INDEX and i in end_of_turn for i, x in zip(ids[:limit], labels[:limit]))
    return {"where": where, "tokens": len(ids), "trained_tokens": sum(1 for x in labels[:limit] if x != IGNORE_INDEX),
            "end_of_turn_trained": trained_end, "spans": spans}


# ---------------------------------------------------------------------- public entry points


def find_splits(path: str | Path) -> list[tuple[str, Path]]:
    """``[(split, file)]``: one train file, or the split files of a directory (``prepare``'s output, or a
    saved ``DatasetDict``)."""
    root = Path(path)
    if not root.is_dir():
        return [("train", root)]
    if (root / "dataset_dict.json").is_file():
        import json

        try:
            names = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        except (ValueError, OSError, AttributeError):
            names = []
        found = [(SPLIT_NAMES.get(str(n), str(n)), root / str(n)) for n in names if (root / str(n)).is_dir()]
        return sorted(found, key=lambda item: _split_rank(item[0])) or [("train", root)]
    found = []
    for file in sorted(root.iterdir()):
        name = SPLIT_NAMES.get(file.stem.lower())
        if name and file.is_file() and file.suffix.lower() in (".jsonl", ".json", ".csv", ".parquet"):
            found.append((name, file))
    names = [name for name, _ in found]
    if "train" in names and len(set(names)) == len(names):
        return sorted(found, key=lambda item: _split_rank(item[0]))
    return [("train", root)]


def _split_rank(name: str) -> int:
    return {"train": 0, "validation": 1, "test": 2}.get(name, 3)


def validate_data(path: str | Path, options: ValidationOptions | None = None, tokenizer: Any = None,
                  benchmark_model: Any = None) -> ValidationReport:
    """Check ``path`` (a file, or a directory of split files) and return every problem and statistic.

    Args:
        path: a .jsonl/.json/.csv/.parquet file, a ``save_to_disk`` directory, or a directory with
            train/validation/test files (as ``tuneforge prepare`` writes).
        options: formats, max_length, batch size... (``ValidationOptions``).
        tokenizer: the model's tokenizer; with it lengths are counted in tokens with its chat
            template, and truncation and the end-of-turn token are checked.
        benchmark_model: a model to time a few training steps on the data (changes its weights;
            pass one that is thrown away) for the training-time estimate.

    Returns:
        A ``ValidationReport``; it never raises for anything in the data.

    Raises:
        ConfigError: the options themselves are invalid (unknown format, malformed template).
    """
    validator = Validator(options, tokenizer, benchmark_model=benchmark_model)
    for split, file in find_splits(path):
        validator.add_file(file, split)
    return validator.finish()


@dataclass
class CheckedData:
    """Examples that passed validation, the report, and the rows left out (with ``skip_invalid``)."""

    examples: list[TrainingExample]
    data_format: str
    report: ValidationReport
    dropped: list[DroppedRow]


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

