"""``TrainingDataManager``: load a data file in any supported format, validate it, and split it for training.

Every file goes through one reader (``stream.iter_file``) and the data doctor's row rules
(``validate.Validator``), so a row that ``tuneforge validate`` passes is a row training and
evaluation accept, and a bad row is always a ``DatasetError`` naming ``file:line`` — never another
exception type.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from tuneforge.core.errors import DatasetError
from tuneforge.data.examples import TrainingData, TrainingExample
from tuneforge.data.split import split_examples

if TYPE_CHECKING:
    from tuneforge.data.findings import Finding
    from tuneforge.data.validate import CheckedData, ValidationOptions, ValidationReport

# Loading without the doctor's warnings: only the errors matter, so skip the costly warning-only checks.
_LOAD_OPTIONS = {"min_examples": 0, "near_duplicate_threshold": None, "check_sensitive": False}


class TrainingDataManager:
    """Loads, validates and splits data. Stateless apart from the options given at construction."""

    def __init__(self, data_format: str = "auto", text_template: str | None = None) -> None:
        self.data_format = data_format
        self.text_template = text_template

    def load(self, path: str | Path) -> tuple[list[TrainingExample], str]:
        """Every example of a file, and the format detected.

        Raises ``DatasetError`` listing every bad row with ``file:line`` (the data doctor's errors),
        whatever the file holds. A directory saved with ``save_to_disk`` as a ``DatasetDict`` gives
        its ``train`` split (``prepare_data`` uses all of its splits).
        """
        checked = self._checked(path, skip_invalid=False, settings=self._options(**_LOAD_OPTIONS))
        return checked.examples, checked.data_format

    def validate_data(self, path: str | Path, tokenizer: Any = None, **options: Any) -> ValidationReport:
        """Every problem in ``path`` with file:line and field, plus statistics (the data doctor).

        ``options`` are ``ValidationOptions`` fields (``max_length``, ``batch_size``, ...). With the
        model's ``tokenizer``, lengths are counted in tokens with its chat template. Never raises for
        the data itself: problems are findings in the report (``report.ok``, ``report.errors``).
        """
        from tuneforge.data.validate import validate_data

        return validate_data(path, self._options(**options), tokenizer)

    def load_checked(self, path: str | Path, skip_invalid: bool = False, tokenizer: Any = None, **options: Any) -> CheckedData:
        """Validate and load ``path`` in one pass: ``.examples``, ``.data_format``, ``.report``, ``.dropped``.

        Raises ``DatasetError`` listing every error, unless ``skip_invalid``: then the rows with errors
        are left out and listed in ``.dropped`` (where, reasons). Errors that dropping rows cannot fix
        (missing or empty file, wrong columns, too few examples left) raise either way.
        """
        return self._checked(path, skip_invalid, self._options(**options), tokenizer)

    def load_records(self, records: Sequence[dict[str, Any]], name: str = "records") -> tuple[list[TrainingExample], str]:
        """Examples from in-memory rows (dicts in any supported format); bad rows raise ``DatasetError`` (``name:row N``)."""
        from tuneforge.data.stream import SourceRow
        from tuneforge.data.validate import Validator, raise_for_errors

        if not records:
            raise DatasetError(f"{name}: no rows given")
        validator = Validator(self._options(**_LOAD_OPTIONS), keep_examples=True)
        validator.add_items((SourceRow(record, None, index) for index, record in enumerate(records, start=1)), name)
        report = validator.finish()
        raise_for_errors(report, validator)
        return [kept.example for kept in validator.examples], report.data_format or "auto"

    def prepare_data(
        self,
        raw: str | Path | Sequence[dict[str, Any]] | Sequence[TrainingExample],
        validation: str | Path | None = None,
        test: str | Path | None = None,
        validation_split: float = 0.1,
        test_split: float = 0.1,
        seed: int = 42,
        skip_invalid: bool | None = None,
    ) -> TrainingData:
        """Validate → preprocess → split.

        ``raw`` is a file path, a directory of splits, a list of row dicts or a list of
        ``TrainingExample``. A directory that ``tuneforge prepare`` wrote (train/validation/test
        files) or a ``DatasetDict`` saved with ``save_to_disk`` keeps its own splits. Validation and
        test sets otherwise come from their own files when given, else are split off the training
        data (seeded, no prompt in two splits).

        With ``skip_invalid`` set (True or False) every file goes through the full data doctor first
        (``load_checked``): False refuses any error, True drops the bad rows and records how many in
        ``metadata["dropped_rows"]`` (the first 50, with reasons, in ``metadata["dropped"]``).
        Validation and test sets that come from their own files (or splits) are compared with the
        training set: prompts found in both are ``split_leakage`` warnings in ``metadata["warnings"]``
        (code, message, where, other_where), also returned as findings by ``data.leakage.find_leakage``.
        """
        dropped: list[dict[str, Any]] = []
        given = {"validation": validation, "test": test}
        if isinstance(raw, (str, Path)):
            splits = self._directory_splits(raw)
            train_path = splits.pop("train", raw)
            for name, path in splits.items():
                given[name] = given[name] or path
            examples, data_format = self._load_split(train_path, skip_invalid, dropped, min_examples=None)
        else:
            examples, data_format = self._examples_of(raw)
        explicit = {name: self._load_split(path, skip_invalid, dropped, min_examples=1)[0]
                    for name, path in given.items() if path}
        train, val, held_out = split_examples(
            examples,
            0.0 if "validation" in explicit else validation_split,
            0.0 if "test" in explicit else test_split,
            seed,
        )
        if not train:
            raise DatasetError(f"no training examples left after the split ({len(examples)} examples in all); add more data")
        leaks = self._leakage(train, explicit)
        source = str(raw) if isinstance(raw, (str, Path)) else "memory"
        metadata: dict[str, Any] = {"format": data_format, "version": 1, "source": source}
        if dropped:
            metadata.update(dropped_rows=len(dropped), dropped=dropped[:50])
        if leaks:
            from tuneforge.data.leakage import leakage_warnings

            metadata["warnings"] = leakage_warnings(leaks)
        return TrainingData(
            examples=train,
            validation=explicit.get("validation", val),
            test=explicit.get("test", held_out),
            metadata=metadata,
        )

    # ------------------------------------------------------------------ helpers

    def _options(self, **options: Any) -> ValidationOptions:
        from tuneforge.data.validate import ValidationOptions

        return ValidationOptions(data_format=self.data_format, text_template=self.text_template, **options)

    def _checked(self, path: str | Path, skip_invalid: bool, settings: ValidationOptions, tokenizer: Any = None) -> CheckedData:
        from tuneforge.data.validate import load_checked

        return load_checked(path, settings, tokenizer, skip_invalid=skip_invalid)

    def _load_split(self, path: str | Path, skip_invalid: bool | None, dropped: list[dict[str, Any]],
                    min_examples: int | None) -> tuple[list[TrainingExample], str]:
        """The examples of one split's file: the loader's rules, or the full doctor when ``skip_invalid`` is set."""
        if skip_invalid is None:
            return self.load(path)
        settings = self._options() if min_examples is None else self._options(min_examples=min_examples)
        checked = self._checked(path, skip_invalid, settings)
        dropped += [row.to_dict() for row in checked.dropped]
        return checked.examples, checked.data_format

    def _directory_splits(self, path: str | Path) -> dict[str, Path]:
        """``{split: file}`` of a directory of splits (``prepare``'s output, a saved ``DatasetDict``); {} otherwise."""
        from tuneforge.data.validate import find_splits

        if not Path(path).is_dir():
            return {}
        found = dict(find_splits(path))
        if set(found) == {"train"} and found["train"] == Path(path):
            return {}  # a plain saved dataset (or not a dataset at all): read as one file
        if "train" not in found:
            raise DatasetError(f"{path}: the directory has splits {sorted(found)} but no 'train' split; "
                               "name the training split 'train'")
        return found

    def _leakage(self, train: list[TrainingExample], explicit: dict[str, list[TrainingExample]]) -> list[Finding]:
        from tuneforge.data.leakage import find_leakage

        return [leak for name, other in explicit.items() for leak in find_leakage(train, other, name)]

    def _examples_of(self, raw: Any) -> tuple[list[TrainingExample], str]:
        items = list(raw)
        if items and all(isinstance(item, TrainingExample) for item in items):
            return items, "examples"
        return self.load_records(items)
