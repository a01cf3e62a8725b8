"""Precision: auto follows the hardware; bf16 LoRA stores the base in bf16 and trains fp32 adapters;
bf16 full fine-tuning keeps fp32 weights under autocast."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tuneforge.config import make_config
from tuneforge.model import precision


def test_auto_is_the_default_and_follows_the_cpu(monkeypatch):
    assert make_config({"data": "x.jsonl"}).precision == "auto"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("fp32", "cpu") == "fp32"


def test_base_dtype_and_forward_context_by_method():
    assert precision.base_weight_dtype("bf16", "lora") == torch.bfloat16
    assert precision.base_weight_dtype("bf16", "full") == torch.float32
    assert precision.base_weight_dtype("fp32", "lora") == torch.float32
    fp32_model, bf16_model = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4).to(torch.bfloat16)
    assert isinstance(precision.forward_context(fp32_model, "bf16"), torch.autocast)  # full fine-tuning
    assert not isinstance(precision.forward_context(bf16_model, "bf16"), torch.autocast)  # weights already bf16
    assert not isinstance(precision.forward_context(fp32_model, "fp32"), torch.autocast)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_bf16_training_runs_and_learns(train_run, method):
    result = train_run(precision="bf16", method=method, epochs=3, evaluate_base=False, learning_rate=1e-2)
    run = result.run_dir
    assert result.model["precision"] == "bf16"
    steps = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if '"train.step"' in line]
    losses = [step["loss"] for step in steps]
    assert all(isinstance(loss, float) for loss in losses)
    assert losses[-1] < losses[0]
    if method == "lora":  # the adapter is trained and saved in fp32, whatever the base was stored in
        assert {tensor.dtype for tensor in load_file(str(run / "adapter" / "adapter_model.safetensors")).values()} == {torch.float32}


def test_fp32_is_kept_when_asked(train_run):
    assert train_run(precision="fp32", epochs=1, evaluate_base=False).model["precision"] == "fp32"
