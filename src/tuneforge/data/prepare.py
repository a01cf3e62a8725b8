"""``prepare_dataset``: clean → validate → deduplicate → split → balance → augment → write, with a manifest.

The output directory holds ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (rows in the input's
own format, cleaned) and ``manifest.json``: the input's hash, the options and seed, counts after each
stage, and every row removed, changed or added, with the reason. Nothing depends on the clock or on
dict order of the machine, so the same command on the same input writes the same bytes.

Splitting keeps every group of examples with the same prompt, or nearly the same prompt (MinHash),
inside one split, so nothing the model is tested on was trained on. Balancing and augmenting touch
only the train split, for the same reason. The whole dataset is held in memory (it is split globally).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from tuneforge.core.errors import ConfigError, DatasetError
from tuneforge.core.paths import file_sha256, publish_directory
from tuneforge.data.augment import AUGMENTERS, augment_row
from tuneforge.data.clean import clean_row
from tuneforge.data.dedup import NearDuplicateIndex, example_text, normalize_text, prompt_text
from tuneforge.data.examples import TrainingExample
from tuneforge.data.row_formats import ROW_FORMATS, detect_row_format, get_format
from tuneforge.data.stats import answer_label, explicit_label
from tuneforge.data.stream import SourceRow, iter_file
from tuneforge.data.validate import KeptExample, ValidationOptions, ValidationReport, Validator, template_columns

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"


@dataclass
class PrepareOptions:
    """What ``prepare_dataset`` does. Everything but cleaning, validation and the split is off by default."""

    data_format: str = "auto"
    text_template: str | None = None
    dedup: bool = False  # drop exact duplicates (after cleaning)
    near_dup: float | None = None  # drop near duplicates at this MinHash Jaccard similarity, e.g. 0.9
    balance: Literal["oversample", "undersample"] | None = None  # train split only
    label_field: str | None = None  # the label for balance (default: stratify field, else label/answer)
    augment: list[str] = field(default_factory=list)  # names from augment.AUGMENTERS; train split only
    split: tuple[float, ...] = (0.8, 0.1, 0.1)  # train, validation[, test]
    stratify: str | None = None  # keep this field's distribution the same in every split
    seed: int = 42
    group_similarity: float = 0.9  # prompts this similar always land in the same split (1.0: only equal ones)

    def check(self) -> None:
        problems = []
        if len(self.split) not in (2, 3) or any(not 0 <= share <= 1 for share in self.split):
            problems.append(f"split: give 2 or 3 shares between 0 and 1 (train,validation[,test]), got {self.split}")
        elif abs(sum(self.split) - 1) > 1e-6 or self.split[0] <= 0:
            problems.append(f"split: the shares must add up to 1 with a train share above 0, got {self.split}")
        if not 0 < self.group_similarity <= 1:
            problems.append(f"group_similarity: a similarity in (0, 1], got {self.group_similarity}")
        if self.near_dup is not None and not 0 < self.near_dup <= 1:
            problems.append(f"near_dup: a similarity in (0, 1], e.g. 0.9; got {self.near_dup}")
        if self.balance not in (None, "oversample", "undersample"):
            problems.append(f"balance: oversample or undersample, got {self.balance!r}")
        unknown = [name for name in self.augment if name not in AUGMENTERS]
        if unknown:
            problems.append(f"augment: unknown method(s) {unknown}; choose from: {', '.join(AUGMENTERS)}")
        if problems:
            raise ConfigError(problems)


@dataclass
class PrepareResult:
    """Where the files went, and the manifest written beside them."""

    out_dir: Path
    files: dict[str, Path]
    manifest: dict[str, Any]
    report: ValidationReport


def prepare_dataset(path: str | Path, out_dir: str | Path, options: PrepareOptions | None = None,
                    force: bool = False) -> PrepareResult:
    """Clean, validate, deduplicate, split, balance and augment ``path``; write the splits and a manifest.

    Raises:
        ConfigError: invalid options, or ``out_dir`` holds files that ``prepare`` did not write (unless ``force``).
        DatasetError: the file cannot be used at all (missing, empty, wrong columns, no usable row).
    """
    options = options or PrepareOptions()
    options.check()
    source, out = Path(path), Path(out_dir)
    _check_out_dir(out, force)
    log = _Log()
    kept, report = _read_clean_validate(source, options, log)
    kept = _deduplicate(kept, options, log)
    assignment = _split(kept, options)
    labels_before = _label_counts(kept, assignment, options)
    train = [k for k, s in zip(kept, assignment) if s == "train"]
    extra = _balance(train, options, log) if options.balance else []
    extra += _augment(train + extra, options, log) if options.augment else []
    rows = {name: [k.row for k, s in zip(kept, assignment) if s == name] for name in SPLITS}
    rows["train"] = [k.row for k in train] + [row for row, _ in extra]
    manifest = _manifest(source, options, log, kept, assignment, rows, labels_before, report)
    files = _write(out, rows, manifest)
    return PrepareResult(out, files, manifest, report)


class _Log:
    """Every row removed, changed or added, and the counts after each stage."""

    def __init__(self) -> None:
        self.removed: list[dict[str, Any]] = []
        self.changed: list[dict[str, Any]] = []
        self.added: list[dict[str, Any]] = []
        self.counts: dict[str, Any] = {}

    def remove(self, where: str, stage: str, code: str, reason: str) -> None:
        self.removed.append({"where": where, "stage": stage, "code": code, "reason": reason})


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError([f"out: {out} is a file; give a directory"])
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file() and not force:
        raise ConfigError([f"out: {out} already holds files that tuneforge prepare did not write; "
                           "choose an empty directory, or pass --force to replace it"])


def _read_clean_validate(source: Path, options: PrepareOptions, log: _Log) -> tuple[list[KeptExample], ValidationReport]:
    checks = ValidationOptions(data_format=options.data_format, text_template=options.text_template, min_examples=1,
                               near_duplicate_threshold=None, max_findings_per_code=None)
    validator = Validator(checks, keep_examples=True)
    fields = template_columns(options.text_template) if options.text_template else None

    def cleaned(items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            if isinstance(item, SourceRow) and isinstance(item.data, dict):
                data_format = "text_template" if fields else (options.data_format if options.data_format != "auto"
                                                              else detect_row_format(item.data))
                if data_format:
                    item.data, changes = clean_row(item.data, data_format, fields)
                    if changes:
                        where = f"{source}:{item.line}" if item.line is not None else f"{source}:row {item.row}"
                        log.changed.append({"where": where, "fields": changes})
            yield item

    validator.add_items(cleaned(iter_file(source)), source, "train")
    report = validator.finish()
    if validator.fatal:
        raise DatasetError(f"{source}: cannot prepare this file:", [str(f) for f in validator.fatal])
    for dropped in validator.dropped.values():
        log.remove(dropped.where, "validate", dropped.reasons[0].split(":", 1)[0], "; ".join(dropped.reasons))
    kept = sorted(validator.examples, key=lambda k: k.position)
    if not kept:
        raise DatasetError(f"{source}: no usable example left after cleaning and validation", [str(f) for f in report.errors])
    log.counts.update(rows_read=validator.rows, invalid=len(validator.dropped), after_validation=len(kept))
    return kept, report


def _deduplicate(kept: list[KeptExample], options: PrepareOptions, log: _Log) -> list[KeptExample]:
    if options.dedup:
        seen: dict[str, str] = {}
        unique = []
        for item in kept:
            key = example_text(item.example)
            if key in seen:
                log.remove(item.where, "dedup", "duplicate", f"exact duplicate of {seen[key]}")
            else:
                seen[key] = item.where
                unique.append(item)
        log.counts["duplicates_removed"] = len(kept) - len(unique)
        kept = unique
    if options.near_dup is not None:
        index = NearDuplicateIndex(options.near_dup)
        unique = []
        for item in kept:
            sketch, matches = index.match(example_text(item.example))
            if matches:
                other, similarity = matches[0]
                log.remove(item.where, "near_dedup", "near_duplicate",
                           f"near duplicate (similarity {similarity:.2f}) of {unique[int(other)].where}")
            else:
                index.insert(len(unique), sketch)
                unique.append(item)
        log.counts["near_duplicates_removed"] = len(kept) - len(unique)
        kept = unique
    log.counts["after_dedup"] = len(kept)
    return kept


def _groups(kept: list[KeptExample], similarity: float) -> list[list[int]]:
    """Indices of examples whose prompts are equal or near copies, each group in input order."""
    parent = list(range(len(kept)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[str, int] = {}
    index = NearDuplicateIndex(similarity)
    for i, item in enumerate(kept):
        text = prompt_text(item.example)
        if text in first_of:
            parent[root(i)] = root(first_of[text])
            continue
        first_of[text] = i
        for other, _ in index.add(i, text):
            parent[root(i)] = root(int(other))
    groups: dict[int, list[int]] = {}
    for i in range(len(kept)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def label_of(row: dict[str, Any], example: TrainingExample, field_name: str | None) -> str:
    """The value of ``field_name`` (a column, a metadata key, or output/completion for the answer),
    case-folded; by default the ``label`` column, else the answer when it is short."""
    if not field_name:
        return explicit_label(row, example) or answer_label(example) or "(none)"
    value = row.get(field_name, example.metadata.get(field_name))
    if value is None and field_name in ("output", "completion", "answer"):
        value = example.output
    if value is None or isinstance(value, (dict, list)):
        return "(none)"
    return normalize_text(str(value)).casefold().strip(" .!?") or "(none)"


def _example_of(row: dict[str, Any], options: PrepareOptions) -> TrainingExample:
    data_format = options.data_format if options.data_format != "auto" else detect_row_format(row)
    known = data_format is not None and data_format in ROW_FORMATS and not options.text_template
    example = get_format(data_format).convert(row, "", []) if known else None
    return example or TrainingExample(text="")


def _split(kept: list[KeptExample], options: PrepareOptions) -> list[str]:
    """The split of each example: groups of similar prompts are assigned whole, per stratum, seeded."""
    shares = dict(zip(SPLITS, options.split))
    strata: dict[str, list[list[int]]] = {}
    for group in _groups(kept, options.group_similarity):
        first = kept[group[0]]
        stratum = label_of(first.row, first.example, options.stratify) if options.stratify else ""
        strata.setdefault(stratum, []).append(group)
    assignment = [""] * len(kept)
    rng = random.Random(options.seed)
    for stratum in sorted(strata):
        groups = strata[stratum]
        rng.shuffle(groups)
        groups.sort(key=len, reverse=True)  # big groups first, while every split still has room (stable: seeded order)
        total = sum(len(g) for g in groups)
        targets = {name: share * total for name, share in shares.items() if share > 0}
        filled = dict.fromkeys(targets, 0)
        for group in groups:
            # The split furthest below its target takes the next group.
            name = max(targets, key=lambda n: (targets[n] - filled[n], -SPLITS.index(n)))
            filled[name] += len(group)
            for i in group:
                assignment[i] = name
    return assignment


def _label_counts(kept: list[KeptExample], assignment: list[str], options: PrepareOptions) -> dict[str, dict[str, int]]:
    field_name = options.label_field or options.stratify
    counts: dict[str, Counter[str]] = {name: Counter() for name in SPLITS}
    for item, split in zip(kept, assignment):
        counts[split][label_of(item.row, item.example, field_name)] += 1
    return {name: dict(sorted(c.items())) for name, c in counts.items() if c}


def _balance(train: list[KeptExample], options: PrepareOptions, log: _Log) -> list[tuple[dict[str, Any], str]]:
    """Undersample (remove from ``train`` in place) or oversample (return copies) so every label has as many."""
    field_name = options.label_field or options.stratify
    by_label: dict[str, list[KeptExample]] = {}
    for item in train:
        by_label.setdefault(label_of(item.row, item.example, field_name), []).append(item)
    if len(by_label) < 2:
        return []
    rng = random.Random(options.seed + 1)
    counts = {label: len(items) for label, items in by_label.items()}
    extra: list[tuple[dict[str, Any], str]] = []
    if options.balance == "undersample":
        floor = min(counts.values())
        drop: set[int] = set()
        for label in sorted(by_label):
            items = by_label[label]
            for item in rng.sample(items, len(items) - floor):
                drop.add(id(item))
                log.remove(item.where, "balance", "undersampled", f"label '{label}' has {counts[label]}; kept {floor}")
        train[:] = [item for item in train if id(item) not in drop]
    else:
        ceiling = max(counts.values())
        for label in sorted(by_label):
            items = list(by_label[label])
            rng.shuffle(items)
            for n in range(ceiling - len(items)):
                source = items[n % len(items)]
                extra.append((json.loads(json.dumps(source.row)), source.where))
                log.added.append({"from": source.where, "method": "oversample", "label": label})
    log.counts["balance"] = {"method": options.balance, "labels_before": dict(sorted(counts.items()))}
    return extra


def _augment(train: list[Any], options: PrepareOptions, log: _Log) -> list[tuple[dict[str, Any], str]]:
    rng = random.Random(options.seed + 2)
    fields = template_columns(options.text_template) if options.text_template else None
    extra = []
    for item in train:
        row, where = (item.row, item.where) if isinstance(item, KeptExample) else item
        data_format = "text_template" if fields else (options.data_format if options.data_format != "auto" else detect_row_format(row))
        for method in options.augment:
            new = augment_row(row, data_format or "", method, rng)
            if new is not None:
                extra.append((new, where))
                log.added.append({"from": where, "method": method})
    log.counts["augmented"] = len(extra)
    return extra




def _manifest(source: Path, options: PrepareOptions, log: _Log, kept: list[KeptExample], assignment: list[str],
              rows: dict[str, list[dict[str, Any]]], labels_before: dict[str, Any], report: ValidationReport) -> dict[str, Any]:
    from tuneforge.core.version import __version__

    field_name = options.label_field or options.stratify
    labels_after: dict[str, dict[str, int]] = {}
    for name in SPLITS:
        counts: Counter[str] = Counter()
        for row in rows[name]:
            counts[label_of(row, _example_of(row, options), field_name)] += 1
        if counts:
            labels_after[name] = dict(sorted(counts.items()))
    return {
        "tuneforge_version": __version__,
        "input": {"path": str(source), "sha256": file_sha256(source), "format": report.data_format},
        "options": {**asdict(options), "split": list(options.split)},
        "seed": options.seed,
        "counts": {**log.counts, "splits_before_balance": {n: assignment.count(n) for n in SPLITS if n in assignment},
                   "written": {name: len(rows[name]) for name in SPLITS if rows[name]}},
        "labels": {"field": field_name or "label/answer", "before_balance": labels_before, "written": labels_after},
        "warnings": dict(Counter(f.code for f in report.warnings)),
        "removed": log.removed,
        "changed": log.changed,
        "added": log.added,
    }


def _write(out: Path, rows: dict[str, list[dict[str, Any]]], manifest: dict[str, Any]) -> dict[str, Path]:
    """Write every file into a staging directory, then move it into place in one rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    files: dict[str, Path] = {}
    try:
        outputs = {}
        for name in SPLITS:
            if not rows[name]:
                continue
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[name])
            data = text.encode("utf-8")
            (staging / f"{name}.jsonl").write_bytes(data)
            outputs[f"{name}.jsonl"] = {"rows": len(rows[name]), "sha256": hashlib.sha256(data).hexdigest()}
            files[name] = out / f"{name}.jsonl"
        manifest["files"] = outputs
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        publish_directory(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files["manifest"] = out / MANIFEST
    return files
