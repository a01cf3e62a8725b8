"""The run's inputs, prepared and checked before its run directory exists: the data, its label set, the encoded splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config import FineTuningConfig
from tuneforge.core.errors import ConfigError, DatasetError
from tuneforge.data.examples import TrainingData
from tuneforge.data.manager import TrainingDataManager
from tuneforge.data.tokenize import EncodedDataset
from tuneforge.evaluate.metrics import is_label_task, normalize_answer
from tuneforge.model.load import load_tokenizer
from tuneforge.model.methods import get_method


@dataclass
class EncodedInputs:
    """What the stages need that was checked before the run directory was made."""

    model_dir: Path
    tokenizer: Any
    train_set: EncodedDataset
    validation_set: EncodedDataset
    labels: list[str] | None  # the label set when the answers are class labels
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)  # the hyper-parameters and why (train/auto.py)

    @property
    def summary(self) -> dict[str, Any]:
        return {
            "train_tokens": self.train_set.total_tokens,
            "trained_tokens_per_epoch": self.train_set.trained_tokens,
            "truncated_examples": len(self.train_set.truncated_examples) + len(self.validation_set.truncated_examples),
            "dropped_examples": self.train_set.dropped_examples + self.validation_set.dropped_examples,
            "labels": self.labels,
        }


def label_space(data: TrainingData) -> list[str] | None:
    """The answers' label set when, over all splits, the answers look like class labels; else None."""
    answers = [example.output for example in data.examples + data.validation + data.test if not example.is_text]
    if not answers or not is_label_task(answers):
        return None
    return sorted({normalize_answer(answer) for answer in answers})


def prepare_data(config: FineTuningConfig) -> TrainingData:
    """``config.data`` (with its validation/test files or splits) read, checked by the data doctor and split."""
    if not config.data:
        raise ConfigError(["data: no training data given; pass --data FILE"])
    manager = TrainingDataManager(config.data_format, config.text_template)
    # skip_invalid=False still runs the full data doctor first: training refuses data with errors.
    return manager.prepare_data(
        config.data, config.validation_data, config.test_data, config.validation_split, config.test_split, config.seed,
        skip_invalid=config.skip_invalid,
    )


def encode_inputs(config: FineTuningConfig, data: TrainingData, model_dir: Path) -> tuple[FineTuningConfig, EncodedInputs]:
    """Tokenize the train and validation sets; refuse data with nothing left to learn from.

    Returns ``config`` with the values chosen for its ``auto`` fields in ``config.resolved`` (it keeps
    them ``auto``; the stages read ``config.concrete()``), and the encoded inputs.
    """
    from tuneforge.train.auto import encode_and_choose

    tokenizer = load_tokenizer(model_dir, config.trust_remote_code)
    labels = label_space(data)
    # Fields left auto are chosen from the encoded data (train/auto.py).
    chosen = encode_and_choose(config, tokenizer, data, model_dir, get_method(config.method), labels)
    concrete, train_set, validation_set = chosen.config.concrete(), chosen.train_set, chosen.validation_set
    if not train_set.items:
        raise DatasetError(
            f"no training example has a token left to learn from at max_length={concrete.max_length}; "
            "raise --max-length or check that the examples have answers"
        )
    if concrete.early_stopping and not validation_set.items:
        raise ConfigError(["early_stopping: there are no validation examples to stop on; "
                           "give --validation-data or a --validation-split above 0"])
    return chosen.config, EncodedInputs(model_dir, tokenizer, train_set, validation_set, labels, chosen.summary)
