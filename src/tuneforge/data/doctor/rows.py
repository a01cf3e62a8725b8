"""``Validator``: one streaming pass over the rows of one or more files (one per split).

Each row is checked by its format's spec (``data/row_formats/``), converted with the loader's own
converter (so a row the doctor passes is a row training accepts), scanned for secrets, encoded
with the model's chat template when a tokenizer is given, and counted for the whole-dataset checks
(``doctor/dataset.py``) that ``finish()`` runs.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tuneforge.core.tokens import END_OF_TURN_MARKERS
from tuneforge.data import checks
from tuneforge.data.dedup import BatchNearDuplicates, KeyColumns, example_keys
from tuneforge.data.doctor.dataset import DatasetChecks
from tuneforge.data.doctor.options import ValidationOptions, template_columns
from tuneforge.data.doctor.report import DroppedRow, KeptExample
from tuneforge.data.doctor.where import _first_line, _where
from tuneforge.data.examples import TrainingExample
from tuneforge.data.findings import Finding, finding
from tuneforge.data.row_formats import detect_row_format, expected_columns, get_format, registered_formats
from tuneforge.data.stats import Distribution, LabelCounter, SystemPrompts
from tuneforge.data.stream import Columns, Item, SourceRow, iter_file
from tuneforge.data.tokenize import IGNORE_INDEX, encode_example

READER_ROW_CODES = {"encoding", "invalid_json", "json_too_deep", "line_too_long", "csv_row"}
BENCHMARK_SAMPLE = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class _FileState:
    path: Path
    split: int
    fixed_format: str | None
    rows: int = 0
    stopped: bool = False
    formats: dict[str, list[Any]] = field(default_factory=dict)  # format -> [count, first locations]
    unused: dict[str, list[Any]] = field(default_factory=dict)  # column -> [count, first Location]


class Validator(DatasetChecks):
    """One streaming pass over one or more files (one per split). Use ``validate_data``, or for several
    files ``add_file`` each, then ``finish``."""

    def __init__(self, options: ValidationOptions | None = None, tokenizer: Any = None, keep_examples: bool = False,
                 speed_probe: Callable[[list[Any]], dict[str, Any]] | None = None) -> None:
        self.options = options or ValidationOptions()
        self.options.check()
        self.tokenizer = tokenizer
        self.keep_examples = keep_examples
        # Times training steps on a sample of the encoded examples (train/estimate.py builds it: this
        # layer must not import the trainer). Returns {"tokens_per_second", "steps"}.
        self.speed_probe = speed_probe
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
        if self.speed_probe is None:
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


def _closest_format(data: dict[str, Any], state: _FileState) -> str | None:
    """For a row with none of the full column sets: the file's format so far, else the format whose columns
    it has most of — so ``{"input": "x"}`` is reported as missing 'output', not as an unknown format."""
    if state.formats:
        return max(state.formats, key=lambda name: state.formats[name][0])
    scores = {spec.name: sum(key in data for key in spec.keys) for spec in registered_formats()}
    best = max(scores, key=lambda name: scores[name])
    return best if scores[best] else None


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
