"""Whole-dataset checks, run once every row is read: duplicates, conflicting answers, near duplicates,
leakage between splits, label balance, system prompts, size; and the statistics and training estimate.

``DatasetChecks`` is a part of ``Validator`` (doctor/rows.py), kept apart because it reads only what
the row pass accumulated (the key table, label and system-prompt counters, length distributions).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tuneforge.data.dedup import duplicate_groups
from tuneforge.data.doctor.report import ValidationReport
from tuneforge.data.doctor.where import _file_of, _finding_order, _line_of, _short_where
from tuneforge.data.findings import finding
from tuneforge.data.stats import IMBALANCE_RATIO, estimate_training, split_sizes, steps_per_epoch


class DatasetChecks:
    """The end-of-pass half of ``Validator``: ``finish()`` and the checks it runs."""

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
        if self.speed_probe is None or not self.bench_items:
            return None
        speed = self.speed_probe(self.bench_items)
        estimate = estimate_training(tokens_per_epoch, self.options.epochs, speed["tokens_per_second"], self.options.cost_per_hour)
        return {**estimate, "tokens_per_second": speed["tokens_per_second"], "measured_steps": speed["steps"],
                "cost_per_hour": self.options.cost_per_hour}
