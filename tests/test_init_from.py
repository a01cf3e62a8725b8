"""Continued fine-tuning (``init_from`` / ``--init-from RUN_DIR``, src/tuneforge/lineage.py).

A run started from an earlier run holds exactly the parent's weights before its first step (the
logits of the model handed to the training loop equal the reloaded parent's), then trains them
further on new examples; it takes over the parent's base, method and method options, records its
lineage in results.json, and resumes exactly. A parent of another base, without weights, or of
another method is refused with one message before any run directory is made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from helpers import make_rows, write_jsonl
from tuneforge.config import make_config
from tuneforge.core.errors import ConfigError
from tuneforge.lineage import weights_sha256
from tuneforge.model.methods import get_method
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.runs import load_trained

FAST = dict(max_steps=3, batch_size=4, max_length=64, evaluate_base=False, test_split=0.0, validation_split=0.1,
            evaluation_strategy="no", saving_strategy="no", final_weights="last", precision="fp32", seed=3,
            estimate_steps=0)


def _train(values: dict[str, Any], on_event: Any = None):
    pipeline = FineTuningPipeline(make_config(values), on_event=on_event, handle_signals=False)
    return pipeline, pipeline.train()


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


@pytest.fixture(scope="module")
def new_rows(tmp_path_factory) -> Path:
    """Examples the parent never saw (other colours of other things)."""
    rows = [{"input": f"what colour is thing number {i}?", "output": ["red", "violet", "amber"][i % 3]} for i in range(24)]
    return write_jsonl(tmp_path_factory.mktemp("new") / "new.jsonl", rows)


@pytest.fixture(scope="module")
def parents(tiny_model_dir, session_dataset, tmp_path_factory) -> dict[str, Path]:
    """One finished parent run per method (made on first use)."""
    made: dict[str, Path] = {}

    def parent(method: str, **extra: Any) -> Path:
        key = method + json.dumps(extra, sort_keys=True)
        if key not in made:
            out = tmp_path_factory.mktemp("parent") / method
            _, result = _train({"data": str(session_dataset), "model": str(tiny_model_dir), "output": str(out), "method": method,
                                "learning_rate": 5e-2 if method != "full" else 1e-3, **FAST, **extra})
            assert str(result.status) == "succeeded"
            made[key] = out
        return made[key]

    return parent  # type: ignore[return-value]


@pytest.mark.parametrize("method", ["lora", "full", "adapter", "prompt_tuning"])
def test_an_init_from_run_starts_from_the_parents_weights_and_trains_on(method, parents, new_rows, tmp_path, monkeypatch):
    parent = parents(method, **({"lora_r": 4} if method == "lora" else {}))
    reloaded, tokenizer, _ = load_trained(parent, device="cpu")
    batch = tokenizer(["what colour is the sea?", "name a colour"], return_tensors="pt", padding=True)
    reloaded.eval()
    with torch.no_grad():
        expected = reloaded(**batch).logits

    import tuneforge.pipeline.run as pipeline_module

    real_fit, seen = pipeline_module.fit, {}

    def fit(model: Any, *args: Any, **kwargs: Any):
        model.eval()
        with torch.no_grad():
            seen["logits"] = model(**batch).logits
        model.train()
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "fit", fit)
    child_dir = tmp_path / "child"
    # Neither --model, --method nor the method's options: all taken from the parent.
    _, result = _train({"data": str(new_rows), "output": str(child_dir), "init_from": str(parent), **FAST})
    assert str(result.status) == "succeeded"
    torch.testing.assert_close(seen["logits"], expected, rtol=0, atol=0)  # exactly the parent before step 1

    output = get_method(method).output_dir
    before, after = _weights(parent / output), _weights(child_dir / output)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before), "it did not train on"

    saved = make_config(__import__("yaml").safe_load((child_dir / "config.yaml").read_text()))
    assert saved.init_from == str(parent.resolve()) and saved.method == method
    if method == "lora":
        assert saved.lora_r == 4  # the parent's adapter shape, not the default
    lineage = json.loads((child_dir / "results.json").read_text())["lineage"]
    assert lineage["parent_run"] == str(parent.resolve()) and lineage["parent_method"] == method
    assert lineage["parent_base"] == saved.model and lineage["generation"] == 1
    assert lineage["parent_weights_sha256"] == weights_sha256(parent / output)
    assert "Lineage" in (child_dir / "report.html").read_text()


def test_a_chain_of_continued_runs_records_every_generation(parents, new_rows, tmp_path):
    first = parents("lora")
    _, second = _train({"data": str(new_rows), "output": str(tmp_path / "second"), "init_from": str(first), **FAST})
    _, third = _train({"data": str(new_rows), "output": str(tmp_path / "third"), "init_from": str(tmp_path / "second"), **FAST})
    lineage = third.to_dict()["lineage"]
    assert lineage["generation"] == 2 and lineage["parent_run"] == str((tmp_path / "second").resolve())
    assert lineage["parent_lineage"]["parent_run"] == str(first.resolve())


def test_an_init_from_run_resumes_exactly(parents, new_rows, tmp_path):
    parent = parents("lora")
    whole = {"data": str(new_rows), "output": str(tmp_path / "whole"), "init_from": str(parent), **FAST}
    _train(whole)
    stopped_values = {**whole, "output": str(tmp_path / "stopped")}

    def stop_after_first_step(event: dict[str, Any]) -> None:
        if event.get("type") == "train.step" and event["step"] == 1:
            pipeline.request_stop("test: stop after step 1")

    pipeline = FineTuningPipeline(make_config(stopped_values), on_event=stop_after_first_step, handle_signals=False)
    assert str(pipeline.train().status) == "interrupted"
    _, resumed = _train({**stopped_values, "resume": True})
    assert str(resumed.status) == "succeeded" and resumed.train["resumed_from_step"] == 1
    assert resumed.lineage and resumed.lineage["parent_run"] == str(parent.resolve())
    a, b = _weights(tmp_path / "whole" / "adapter"), _weights(tmp_path / "stopped" / "adapter")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def _refused(values: dict[str, Any], *needles: str) -> str:
    with pytest.raises(ConfigError) as caught:
        FineTuningPipeline(make_config(values), handle_signals=False).train()
    message = str(caught.value)
    assert "init_from" in message and all(needle in message for needle in needles), message
    assert not Path(values["output"]).exists(), "a refused run left a run directory behind"
    return message


def test_init_from_refuses_another_base_a_run_without_weights_and_another_method(parents, new_rows, tiny_model_dir, tmp_path):
    parent = parents("lora")
    out = str(tmp_path / "child")
    other_base = shutil.copytree(tiny_model_dir, tmp_path / "other-base")
    _refused({"data": str(new_rows), "output": out, "init_from": str(parent), "model": str(other_base)},
             "was trained on base", "leave --model out")
    _refused({"data": str(new_rows), "output": out, "init_from": str(parent), "method": "ia3"},
             "method 'lora'", "--method 'ia3'")
    _refused({"data": str(new_rows), "output": out, "init_from": str(parent), "lora_r": 8}, "lora_r")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(parent / "config.yaml", unfinished / "config.yaml")
    _refused({"data": str(new_rows), "output": out, "init_from": str(unfinished)}, "holds no trained weights", "tuneforge resume")
    _refused({"data": str(new_rows), "output": out, "init_from": str(tmp_path / "nowhere")}, "does not exist")
    _refused({"data": str(new_rows), "output": out, "init_from": str(tmp_path)}, "not a tuneforge run directory")
    # the same base named explicitly (same path) is fine: nothing is refused before training
    config = make_config({"data": str(new_rows), "output": out, "init_from": str(parent), "model": str(tiny_model_dir)})
    from tuneforge.lineage import resolve_init_from

    resolved, found = resolve_init_from(config)
    assert found is not None and resolved.method == "lora"


def test_cli_init_from_another_base_is_one_message_and_exit_1(capsys, parents, new_rows, tiny_model_dir, tmp_path):
    from tuneforge.cli.main import main

    parent = parents("lora")
    other_base = shutil.copytree(tiny_model_dir, tmp_path / "other-base")
    code = main(["finetune", "--data", str(new_rows), "--init-from", str(parent), "--model", str(other_base),
                 "--output", str(tmp_path / "child")])
    captured = capsys.readouterr()
    assert code == 1 and "init_from" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "child").exists()
    assert "--init-from" in _help(capsys)


def _help(capsys) -> str:
    from tuneforge.cli.main import main

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    return capsys.readouterr().out


def test_default_rows_helper_is_distinct_from_the_new_rows(new_rows):
    # the child's data really is new: none of its prompts is one the parent trained on
    parent_prompts = {row["input"] for row in make_rows()}
    child_prompts = {json.loads(line)["input"] for line in new_rows.read_text().splitlines()}
    assert not parent_prompts & child_prompts
