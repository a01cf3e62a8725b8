"""Several adapters on one base: --adapter-name, `adapters list`, several loaded at once for inference,
`adapters merge` through PEFT's weighted adapters with the result scored on each source's test set."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import make_rows, write_jsonl
from tuneforge.adapter_sets import find_adapter, list_adapters, merge_adapters
from tuneforge.cli.main import main
from tuneforge.config import make_config
from tuneforge.core.errors import CheckpointError, ConfigError
from tuneforge.pipeline import FineTuningPipeline

RUN = dict(max_steps=3, batch_size=4, max_length=64, evaluate_base=False, test_split=0.2, validation_split=0.1,
           evaluation_strategy="no", saving_strategy="no", final_weights="last", precision="fp32", seed=3,
           max_new_tokens=2, evaluation_metrics=["accuracy", "loss"], estimate_steps=0)


@pytest.fixture(scope="module")
def two_tasks(tiny_model_dir, tmp_path_factory):
    """Two LoRA adapters on the tiny base, trained with --adapter-name in one runs/ folder, plus an IA3 one."""
    root = tmp_path_factory.mktemp("adapters")
    rows = make_rows(40)
    data = {"colors": write_jsonl(root / "colors.jsonl", rows),
            "shouting": write_jsonl(root / "shout.jsonl", [{"input": r["input"], "output": r["output"].upper()} for r in rows])}
    runs = root / "runs"
    for name, file in data.items():
        FineTuningPipeline(make_config({"data": str(file), "model": str(tiny_model_dir), "adapter_name": name,
                                        "output": str(runs / name), "lora_r": 4, **RUN}), handle_signals=False).train()
    FineTuningPipeline(make_config({"data": str(data["colors"]), "model": str(tiny_model_dir), "method": "ia3",
                                    "adapter_name": "scales", "output": str(runs / "scales"), **RUN}), handle_signals=False).train()
    return runs


def test_adapter_name_names_the_default_run_directory(tiny_model_dir, session_dataset, tmp_path, monkeypatch):
    from tuneforge.pipeline import default_run_dir

    assert str(default_run_dir(make_config({"adapter_name": "billing"}))) == "runs/billing"
    assert str(default_run_dir(make_config({"adapter_name": "billing", "name": "other"}))) == "runs/other"


def test_adapters_list_finds_each_with_base_and_method(two_tasks, tiny_model_dir, capsys):
    found = {info.name: info for info in list_adapters([two_tasks])}
    assert set(found) == {"colors", "shouting", "scales"}
    assert found["colors"].method == "lora" and found["scales"].method == "ia3" and found["scales"].peft_type == "IA3"
    assert all(info.base == str(tiny_model_dir) for info in found.values())
    assert found["colors"].path == str(two_tasks / "colors" / "adapter") and found["colors"].size_bytes > 0
    assert main(["adapters", "list", str(two_tasks), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["name"] for item in listed] == ["colors", "scales", "shouting"]
    assert find_adapter("shouting", [two_tasks]).run_dir == str(two_tasks / "shouting")
    with pytest.raises(CheckpointError, match="no adapter named 'nope'"):
        find_adapter("nope", [two_tasks])


def test_several_adapters_loaded_at_once_for_inference(two_tasks, tiny_model_dir):
    from tuneforge.inference import GenerationRequest, InferenceEngine
    from tuneforge.model.load import load_model, load_tokenizer

    engine = InferenceEngine(load_model(tiny_model_dir, "cpu"), load_tokenizer(tiny_model_dir))
    for info in list_adapters([two_tasks / "colors", two_tasks / "shouting"]):
        engine.load_adapter(info.name, info.path)
    assert set(engine.adapters) == {"colors", "shouting"}
    requests = [GenerationRequest(prompt="color of sky?", max_new_tokens=3, adapter=name) for name in ("colors", "shouting", None)]
    results = engine.generate(requests)
    assert len(results) == 3


@pytest.mark.parametrize("how", ["linear", "ties", "dare_linear"])
def test_merge_combines_two_adapters_and_scores_each_tasks_test_set(two_tasks, tmp_path, how):
    out = tmp_path / f"merged-{how}"
    torch.manual_seed(0)
    result = merge_adapters(["colors", "shouting"], [0.7, 0.3], how, out, roots=[two_tasks], max_eval_examples=4)
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert set(result.evaluations) == {"colors", "shouting"}
    for scores in result.evaluations.values():
        assert scores["examples"] == 4 and "accuracy" in scores["combined"] and scores["source_tuned"] is not None
    saved = json.loads((out / "merge.json").read_text())
    assert saved["how"] == how and saved["weights"] == [0.7, 0.3]
    # the combined adapter is itself an adapter of the same base: listed, and loadable as a run
    info = find_adapter(str(out))
    assert info.name == out.name and info.peft_type == "LORA"
    from tuneforge.runs import load_trained

    model, _, _ = load_trained(out, device="cpu")
    names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert names


def test_merge_cat_is_the_weighted_sum_of_the_updates(two_tasks, tmp_path, tiny_model_dir):
    """cat keeps every factor: each layer's weight update is exactly Σ wᵢ·ΔWᵢ of the sources."""
    from peft import PeftModel

    from tuneforge.model.load import load_model

    out = tmp_path / "sum"
    merge_adapters(["colors", "shouting"], [0.7, 0.3], "cat", out, roots=[two_tasks], evaluate=False)
    model = PeftModel.from_pretrained(load_model(tiny_model_dir, "cpu"), str(two_tasks / "colors" / "adapter"), adapter_name="colors")
    model.load_adapter(str(two_tasks / "shouting" / "adapter"), adapter_name="shouting")
    model.load_adapter(str(out / "adapter"), adapter_name="merged")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    expected = 0.7 * layer.get_delta_weight("colors") + 0.3 * layer.get_delta_weight("shouting")
    assert expected.abs().max() > 0
    torch.testing.assert_close(layer.get_delta_weight("merged"), expected, rtol=1e-4, atol=1e-6)


def test_merge_refuses_what_it_cannot_combine(two_tasks, tmp_path, capsys):
    with pytest.raises(ConfigError, match="only LoRA adapters .* scales is not"):
        merge_adapters(["colors", "scales"], [0.5, 0.5], "linear", tmp_path / "x", roots=[two_tasks])
    with pytest.raises(ConfigError, match="one weight per adapter"):
        merge_adapters(["colors", "shouting"], [1.0], "linear", tmp_path / "x", roots=[two_tasks])
    assert main(["adapters", "merge", "colors", "--weights", "1", "--out", str(tmp_path / "y"), "--runs", str(two_tasks)]) == 1
    assert "at least two adapters" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_adapters_merge_cli(two_tasks, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["adapters", "merge", "colors", "shouting", "--weights", "0.7,0.3", "--how", "ties", "--out", str(out),
                 "--runs", str(two_tasks), "--max-eval-examples", "2", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["how"] == "ties" and printed["density"] == 0.5 and set(printed["evaluations"]) == {"colors", "shouting"}
