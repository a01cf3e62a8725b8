"""FineTuningConfig / load_config: validation at the edge, every problem at once, YAML round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuneforge.config import DEFAULT_LEARNING_RATE, FineTuningConfig, load_config, make_config
from tuneforge.core.errors import ConfigError


def test_defaults_are_valid():
    config = make_config({})
    assert config.method == "lora"
    assert config.epochs == "auto" and config.batch_size == "auto"  # chosen from the data by the run (train/auto.py)
    assert config.concrete().epochs > 0 and config.concrete().batch_size >= 1  # outside a run: the old fixed values
    assert config.evaluation_strategy in ("steps", "epoch", "no")
    assert config.validation_split + config.test_split < 0.9
    assert config.resolved_learning_rate == DEFAULT_LEARNING_RATE["lora"]
    assert make_config({"method": "full"}).resolved_learning_rate == DEFAULT_LEARNING_RATE["full"]
    assert make_config({"learning_rate": 3e-4}).resolved_learning_rate == 3e-4


def test_several_invalid_values_reported_together():
    with pytest.raises(ConfigError) as caught:
        make_config({"epochs": -1, "batch_size": 0, "method": "qlora2"})
    problems = caught.value.problems
    assert len(problems) == 3, problems
    for field, bad in (("epochs", "-1"), ("batch_size", "0"), ("method", "qlora2")):
        assert any(p.startswith(f"{field}:") and bad in p for p in problems), (field, problems)
    message = str(caught.value)
    assert "epochs" in message and "batch_size" in message and "method" in message


@pytest.mark.parametrize(
    "values, field",
    [
        ({"learning_rate": 0}, "learning_rate"),
        ({"validation_split": 1.5}, "validation_split"),
        ({"max_length": 4}, "max_length"),
        ({"saving_strategy": "sometimes"}, "saving_strategy"),
        ({"evaluation_metrics": ["accuracy", "vibes"]}, "evaluation_metrics"),
        ({"data_format": "xml"}, "data_format"),
    ],
)
def test_single_invalid_value_names_its_field(values, field):
    with pytest.raises(ConfigError) as caught:
        make_config(values)
    assert any(p.startswith(field) for p in caught.value.problems), caught.value.problems


def test_cross_field_rules():
    with pytest.raises(ConfigError) as caught:
        make_config({"validation_split": 0.5, "test_split": 0.45})
    assert any("validation_split + test_split" in p for p in caught.value.problems)
    with pytest.raises(ConfigError) as caught:
        make_config({"text_template": "no placeholders"})
    assert any("text_template" in p for p in caught.value.problems)


def test_unknown_field_rejected():
    with pytest.raises(ConfigError) as caught:
        make_config({"epochz": 3})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("epochz:")
    assert "unknown field" in caught.value.problems[0]


def test_assignment_is_validated():
    config = make_config({})
    with pytest.raises(Exception):
        config.batch_size = 0


def test_yaml_file_and_overrides(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 5\nbatch_size: 4\nlearning_rate: 0.0005\nmethod: full\n")
    config = load_config(path, {"epochs": 2, "batch_size": None})
    assert config.epochs == 2  # the override wins
    assert config.batch_size == 4  # a None override is ignored
    assert config.learning_rate == 5e-4
    assert config.method == "full"


def test_yaml_values_are_validated_with_source(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: -3\nbatch_size: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert {p.split(":")[0] for p in caught.value.problems} == {"epochs", "batch_size"}


@pytest.mark.parametrize("text", ["epochs: [1, 2\nbatch_size: 3\n", "\tepochs: 3\n  : : :\n", "- 1\n- 2\n"])
def test_bad_yaml_is_a_config_error(tmp_path: Path, text: str):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_non_utf8_yaml_is_a_config_error(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError):
        load_config(path)


def test_missing_config_file(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(missing) in str(caught.value)
    assert "not found" in str(caught.value)


def test_empty_yaml_gives_defaults(tmp_path: Path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == FineTuningConfig()


def test_to_yaml_round_trip(tmp_path: Path):
    config = make_config(
        {
            "data": "train.jsonl",
            "epochs": 2.5,
            "batch_size": 3,
            "learning_rate": 2e-4,
            "lora_target_modules": ["q_proj", "v_proj"],
            "evaluation_metrics": ["loss", "accuracy"],
            "text_template": "{question}\n{answer}",
            "saving_strategy": "steps",
            "save_steps": 7,
            "train_on_prompt": True,
        }
    )
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config


def test_to_yaml_keeps_an_unset_learning_rate_unset(tmp_path: Path):
    # Unset stays auto, so re-running config.yaml with another method picks that method's default.
    path = tmp_path / "config.yaml"
    path.write_text(make_config({"method": "full"}).to_yaml())
    assert yaml.safe_load(path.read_text())["learning_rate"] == "auto"
    assert load_config(path).resolved_learning_rate == DEFAULT_LEARNING_RATE["full"]
    assert load_config(path, {"method": "lora"}).resolved_learning_rate == DEFAULT_LEARNING_RATE["lora"]


def test_to_yaml_round_trip_of_defaults(tmp_path: Path):
    config = make_config({})
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config
