"""``tuneforge export``: merged weights checked against the trained model, the manifest, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.core.errors import TuneforgeError, UnknownNameError
from tuneforge.export import ExportError, ParityError, export_model
from tuneforge.export.api import MANIFEST


@pytest.fixture(scope="module")
def export_run(lora_run):
    """The shared tiny LoRA run (conftest's ``lora_run``: a test split, trained enough to answer something)."""
    return Path(lora_run.run_dir)


def test_merged_export_loads_with_plain_transformers_and_answers_like_the_run(export_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.runs import load_trained

    result = export_model(export_run, "merged", out_dir=tmp_path / "merged")
    parity = result.details["parity"]
    assert parity["passed"] and parity["greedy_agreement"] == 1.0 and parity["top1_agreement"] == 1.0
    assert parity["tokenizer_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-3
    assert parity["examples"] > 0 and parity["export_accuracy"] == parity["trained_accuracy"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tokenizer.chat_template and not any((tmp_path / "merged").glob("adapter_*"))
    trained, _, _ = load_trained(export_run, device="cpu")
    ids = torch.tensor([tokenizer("<|im_start|>user\ncolor of sky?<|im_end|>\n")["input_ids"]])
    with torch.inference_mode():
        assert torch.allclose(model(input_ids=ids).logits, trained.float()(input_ids=ids).logits, atol=1e-4)
    generation = json.loads((tmp_path / "merged" / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in [generation["eos_token_id"]] + list(
        generation["eos_token_id"] if isinstance(generation["eos_token_id"], list) else [])


@pytest.mark.slow  # 60-120 s on a loaded 2-core machine: in the slow stage of CI
def test_the_manifest_names_the_run_files_hashes_tools_and_parity(export_run, tmp_path):
    from tuneforge.core.paths import file_sha256

    out = tmp_path / "m"
    export_model(export_run, "merged", out_dir=out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == "merged" and manifest["source_run"]["method"] == "lora"
    assert manifest["source_run"]["run_dir"] == str(export_run.resolve())
    weights = manifest["files"]["model.safetensors"]
    assert weights["sha256"] == file_sha256(out / "model.safetensors") and weights["bytes"] > 0
    assert {"tuneforge", "torch", "transformers", "peft"} <= set(manifest["tools"])
    assert manifest["parity"]["passed"] is True
    assert not list(tmp_path.glob(".*staging*"))


@pytest.mark.slow  # 60-120 s on a loaded 2-core machine: in the slow stage of CI
def test_check_only_reruns_the_check_and_fails_under_a_threshold_with_the_numbers(export_run, tmp_path):
    out = tmp_path / "m"
    export_model(export_run, "merged", out_dir=out)
    again = export_model(export_run, "merged", out_dir=out, check_only=True)
    assert again.details["parity"]["greedy_agreement"] == 1.0 and "checked_at" in again.details
    with pytest.raises(ParityError, match="greedy agreement 100.0% is under the required 101.0%"):
        export_model(export_run, "merged", out_dir=out, check_only=True, min_agreement=1.01)


def test_check_only_without_an_export_says_to_export_first(export_run, tmp_path):
    with pytest.raises(ExportError, match="holds no export"):
        export_model(export_run, "merged", out_dir=tmp_path / "nothing", check_only=True)


def test_parity_on_given_data(export_run, tmp_path, write_dataset):
    from tests.helpers import make_rows

    data = write_dataset("probe.jsonl", make_rows(6))
    result = export_model(export_run, "merged", out_dir=tmp_path / "m", data=data)
    assert result.details["parity"]["examples"] == 6


def test_a_run_without_weights_is_refused_and_nothing_is_written(export_run, tmp_path):
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(export_run, broken, ignore=shutil.ignore_patterns("adapter", "checkpoints"))
    with pytest.raises(ExportError, match="holds no trained weights"):
        export_model(broken, "merged", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unfinished_run_is_refused_with_how_to_finish_it(export_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(export_run, run)
    results = json.loads((run / "results.json").read_text())
    results["status"] = "interrupted"
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(ExportError, match="did not finish training.*tuneforge resume"):
        export_model(run, "merged")
    (run / "results.json").unlink()
    with pytest.raises(ExportError, match="has no results.json"):
        export_model(run, "merged")
    assert not (run / "export").exists()


def test_not_a_directory_unknown_format_and_quantization(export_run, tmp_path):
    with pytest.raises(ExportError, match="is not a directory"):
        export_model(tmp_path / "missing", "merged")
    with pytest.raises(UnknownNameError, match="unknown exporter 'safetensor'; choose from: .*merged"):
        export_model(export_run, "safetensor")
    with pytest.raises(ExportError, match="drop --quantize q4_k_m"):
        export_model(export_run, "merged", quantize="q4_k_m")


def test_a_failing_export_leaves_no_staging_directory(export_run, tmp_path, monkeypatch):
    from tuneforge.export import merged

    def broken(*args, **kwargs):
        raise ExportError("disk full")

    monkeypatch.setattr(merged, "write_hf_directory", broken)
    with pytest.raises(TuneforgeError, match="disk full"):
        export_model(export_run, "merged", out_dir=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # 60-120 s on a loaded 2-core machine: in the slow stage of CI
def test_the_cli_exports_and_exits_1_with_a_message_on_bad_input(export_run, tmp_path, capsys):
    from tuneforge.cli.main import main

    assert main(["export", str(export_run), "--format", "merged", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "exported merged to" in out and "greedy agreement 100.0%" in out and "model.safetensors" in out
    assert main(["export", str(tmp_path / "nope"), "--format", "merged"]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert main(["export", str(export_run), "--format", "merged", "--out", str(tmp_path / "m"), "--check-only",
                 "--min-agreement", "1"]) == 0
