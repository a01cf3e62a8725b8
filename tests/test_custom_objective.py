"""A user's own loss from a file (examples/focal_loss.py) trains through the CLI with its metrics logged; a
reference that does not resolve or does not follow the protocol is one message, exit 1, no run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import read_events
from tuneforge.cli.main import main
from tuneforge.core.errors import TrainingError
from tuneforge.model.loss import LossSums
from tuneforge.train.objectives import as_loss_sums

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST = ["--max-steps", "3", "--batch-size", "4", "--max-length", "64", "--no-evaluate-base", "--test-split", "0",
        "--validation-split", "0.1", "--evaluation-strategy", "steps", "--eval-steps", "3", "--saving-strategy", "no",
        "--precision", "fp32", "--no-baselines", "--no-forgetting-check", "--estimate-steps", "0"]


@pytest.fixture
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # what PYTHONPATH=examples does


def test_the_focal_loss_example_trains_from_its_file_and_logs_its_metrics(tiny_model_dir, session_dataset, tmp_path,
                                                                          examples_importable):
    run_dir = tmp_path / "focal"
    code = main(["finetune", "--data", str(session_dataset), "--model", str(tiny_model_dir), *FAST,
                 "--objective", "focal_loss:focal_loss", "--output", str(run_dir), "--json"])
    assert code == 0
    import focal_loss

    assert Path(focal_loss.__file__).resolve() == EXAMPLES / "focal_loss.py"
    steps = [event for event in read_events(run_dir) if event["type"] == "train.step"]
    assert len(steps) == 3
    for step in steps:  # the user's metrics are logged beside the loss; focal <= cross-entropy since (1-p)^γ <= 1
        assert {"cross_entropy", "p_answer"} <= set(step) and 0 < step["p_answer"] < 1
        assert 0 < step["loss"] < step["cross_entropy"]
    evaluation = next(event for event in read_events(run_dir) if event["type"] == "eval.result")
    assert "validation_cross_entropy" in evaluation
    assert "focal_loss:focal_loss" in (run_dir / "config.yaml").read_text()


@pytest.mark.parametrize("reference, says", [
    ("no_such_losses:focal", "cannot import module 'no_such_losses'"),
    ("focal_loss:focal", "has no attribute 'focal'"),
    ("focal_loss:GAMMA", "expected a loss function"),
    ("tuneforge.model.loss:perplexity", "must accept (model, batch, *, through_wrapper)"),
])
def test_a_bad_objective_reference_is_one_message_before_any_run_directory(tiny_model_dir, session_dataset, tmp_path,
                                                                            capsys, examples_importable, reference, says):
    run_dir = tmp_path / "run"
    code = main(["finetune", "--data", str(session_dataset), "--model", str(tiny_model_dir), *FAST,
                 "--objective", reference, "--output", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 1 and not run_dir.exists()
    assert says in err and "objective" in err and "Traceback" not in err


def test_what_an_objective_returns_is_checked():
    batch = {"labels": torch.tensor([[-100, 5, 6, -100]])}
    sums = as_loss_sums((torch.tensor(2.0), {"extra": torch.tensor(0.5)}), batch)
    assert (float(sums.loss_sum), sums.tokens, sums.metrics) == (4.0, 2, {"extra": 1.0})  # means -> sums over 2 tokens
    kept = LossSums(torch.tensor(1.0), 3, 1)
    assert as_loss_sums(kept, batch) is kept
    with pytest.raises(TrainingError, match=r"returned float; an objective returns LossSums"):
        as_loss_sums(1.5, batch, "my_loss")
    with pytest.raises(TrainingError, match="every metric must be a number"):
        as_loss_sums((torch.tensor(1.0), {"bad": "text"}), batch)
