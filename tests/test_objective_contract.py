"""Every registered objective honours the protocol (docs/SEAMS.md): on the batch it trains on (pairs for a
pairwise one) it returns finite LossSums whose gradient reaches the adapter, its metrics are finite numbers,
its options are config fields, and it runs through a wrapper whose forward injects state (prompt tuning)."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.config import FineTuningConfig, make_config
from tuneforge.core.registries import OBJECTIVES
from tuneforge.data.batching import collate
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import encode_example, encode_pair
from tuneforge.model.loss import LossSums
from tuneforge.train.objectives import bind, configured_objective

EXAMPLES = [TrainingExample(prompt="color of the sky?", completion="blue", rejected="green"),
            TrainingExample(prompt="snow?", completion="white as milk", rejected="black")]


def _batch(tokenizer, pairwise: bool):
    items = [encode_pair(tokenizer, e, 128) if pairwise else encode_example(tokenizer, e, 128) for e in EXAMPLES]
    return collate(items, tokenizer.pad_token_id)


def _model(tiny_model_dir, config):
    from transformers import AutoModelForCausalLM

    from tuneforge.model.methods import get_method, make_trainable

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = make_trainable(get_method(config.method), base, config)  # the fused LoRA path included
    with torch.no_grad():  # a non-zero adapter, so that DPO's policy differs from its reference
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


@pytest.mark.parametrize("name", OBJECTIVES.names())
@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_every_objective_gives_finite_sums_whose_gradient_reaches_the_adapter(name, method, tiny_model_dir, tiny_tokenizer):
    values = {"objective": name, "method": method, "precision": "fp32"}
    config = make_config({**values, "num_virtual_tokens": 4} if method == "prompt_tuning" else values)
    objective = configured_objective(config)
    for option in getattr(objective, "options", ()):
        assert option in FineTuningConfig.model_fields
    pairwise = bool(getattr(objective, "pairwise", False))
    model = _model(tiny_model_dir, config)
    loss_sums = bind(objective, through_wrapper=method == "prompt_tuning")
    sums = loss_sums(model, _batch(tiny_tokenizer, pairwise))
    assert isinstance(sums, LossSums) and sums.tokens > 0 and 0 <= sums.correct <= sums.tokens
    assert math.isfinite(float(sums.loss_sum))
    assert all(isinstance(value, float) and math.isfinite(value) for value in sums.metrics.values())
    sums.loss_sum.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    if pairwise:
        assert sums.tokens == len(EXAMPLES)  # one unit per pair


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_dpo_reference_is_the_base_for_the_fused_lora_path_and_for_prompt_tuning(method, tiny_model_dir, tiny_tokenizer,
                                                                                 tiny_model):
    from tuneforge.model.log_probs import sequence_log_probs
    from tuneforge.train.objectives.pairs import reference_model

    values = {"objective": "dpo", "method": method, "precision": "fp32"}
    config = make_config({**values, "num_virtual_tokens": 4} if method == "prompt_tuning" else values)
    model = _model(tiny_model_dir, config)
    batch = _batch(tiny_tokenizer, pairwise=True)
    through_wrapper = method == "prompt_tuning"
    with reference_model(model):
        reference, _ = sequence_log_probs(model, batch, through_wrapper)
    with torch.no_grad():
        base, _ = sequence_log_probs(tiny_model, batch)
        policy, _ = sequence_log_probs(model, batch, through_wrapper)
    assert torch.allclose(reference, base, atol=1e-5)
    assert not torch.allclose(policy, base, atol=1e-3)
