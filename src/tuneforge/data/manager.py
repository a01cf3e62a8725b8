"""``TrainingDataManager``: load a data file in any supported format, validate it, and split it for training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from tuneforge.core.errors import DatasetError
from tuneforge.data.examples import TrainingData, TrainingExample
from tuneforge.data.formats import rows_to_examples
from tuneforge.data.load import RawRow, read_rows
from tuneforge.data.split import split_examples

if TYPE_CHECKING:
    from tuneforge.data.validate import CheckedData, ValidationReport


class TrainingDataManager:
    """Loads, validates and splits data. Stateless apart from the options given at construction."""

    def __init__(self, data_format: str = "auto", text_template: str | None = None) -> None:
        self.data_format = data_format
        self.text_template = text_template

    def load(self, path: str | Path) -> tuple[list[TrainingExample], str]:
        """Every example of a file, and the format detected. Raises ``DatasetError`` on any bad row."""
        rows = read_rows(path)
        return rows_to_examples(rows, self.data_format, self.text_template)

    def validate_data(self, path: str | Path, tokenizer: Any = None, **options: Any) -> ValidationReport:
        """Every problem in ``path`` with file:line and field, plus statistics (the data doctor).

        ``options`` are ``ValidationOptions`` fields (``max_length``, ``batch_size``, ...). With the
        model's ``tokenizer``, lengths are counted in tokens with its chat template. Never raises for
        the data itself: problems are findings in the report (``report.ok``, ``report.errors``).
        """
        from tuneforge.data.validate import ValidationOptions, validate_data

        settings = ValidationOptions(data_format=self.data_format, text_template=self.text_template, **options)
        return validate_data(path, settings, tokenizer)

    def load_checked(self, path: str | Path, skip_invalid: bool = False, tokenizer: Any = None, **options: Any) -> CheckedData:
        """Validate and load ``path`` in one pass: ``.examples``, ``.data_format``, ``.report``, ``.dropped``.

        Raises ``DatasetError`` listing every error, unless ``skip_invalid``: then the rows with errors
        are left out and listed in ``.dropped`` (where, reasons). Errors that dropping rows cannot fix
        (missing or empty file, wrong columns, too few examples left) raise either way.
        """
        from tuneforge.data.validate import ValidationOptions, load_checked

        settings = ValidationOptions(data_format=self.data_format, text_template=self.text_template, **options)
        return load_checked(path, settings, tokenizer, skip_invalid=skip_invalid)

    def load_records(self, records: Sequence[dict[str, Any]], name: str = "records") -> tuple[list[TrainingExample], str]:
        """Examples from in-memory rows (dicts in any supported format)."""
        if not records:
            raise DatasetError(f"{name}: no rows given")
        rows = [RawRow(record, f"{name}:row {index}") for index, record in enumerate(records, start=1)]
        return rows_to_examples(rows, self.data_format, self.text_template)

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

        ``raw`` is a file path, a list of row dicts or a list of ``TrainingExample``. Validation and
        test sets come from their own files when given, else are split off ``raw`` (seeded, no prompt
        in two splits). With ``skip_invalid`` set (True or False) a file ``raw`` goes through the full
        data doctor first (``load_checked``): False refuses any error, True drops the bad rows and
        records how many in ``metadata["dropped_rows"]`` (the first 50, with reasons, in ``metadata["dropped"]``).
        """
        dropped: list[dict[str, Any]] = []
        if skip_invalid is not None and isinstance(raw, (str, Path)):
            checked = self.load_checked(raw, skip_invalid=skip_invalid)
            examples, data_format = checked.examples, checked.data_format
            dropped = [row.to_dict() for row in checked.dropped]
        else:
            examples, data_format = self._examples_of(raw)
        val_examples = self.load(validation)[0] if validation else None
        test_examples = self.load(test)[0] if test else None
        train, val, held_out = split_examples(
            examples,
            0.0 if val_examples is not None else validation_split,
            0.0 if test_examples is not None else test_split,
            seed,
        )
        if not train:
            raise DatasetError(f"no training examples left after the split ({len(examples)} examples in all); add more data")
        source = str(raw) if isinstance(raw, (str, Path)) else "memory"
        return TrainingData(
            examples=train,
            validation=val_examples if val_examples is not None else val,
            test=test_examples if test_examples is not None else held_out,
            metadata={"format": data_format, "version": 1, "source": source,
                      **({"dropped_rows": len(dropped), "dropped": dropped[:50]} if dropped else {})},
        )

    def _examples_of(self, raw: Any) -> tuple[list[TrainingExample], str]:
        if isinstance(raw, (str, Path)):
            return self.load(raw)
        items = list(raw)
        if items and all(isinstance(item, TrainingExample) for item in items):
            return items, "examples"
        return self.load_records(items)
