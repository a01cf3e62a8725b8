"""The fused LoRA MLP gives the unfused outputs and gradients, keeps half the intermediate-width activations,
and falls back to the module's own forward where it must."""

from __future__ import annotations

import pytest
import torch

from tuneforge.model import fast_mlp
from tuneforge.model.adapters import apply_lora
from tuneforge.model.fast_lora import speed_up_lora
from tuneforge.model.fast_mlp import speed_up_lora_mlps


def _lora_model(tiny_model_dir, dropout: float = 0.0, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype), 4, 8, dropout, "all-linear")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter path count
            parameter.data.normal_(0, 0.1)
    speed_up_lora(model)
    return model


def _loss_and_grads(model, input_ids):
    model.zero_grad()
    logits = model(input_ids=input_ids).logits
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:])
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _saved_intermediate_tensors(model, input_ids) -> int:
    """How many distinct intermediate-width tensors the forward pass saves for backward."""
    width = model.config.intermediate_size
    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    seen: set[int] = set()

    def pack(tensor):
        if tensor.shape[-1] == width and tensor.untyped_storage().data_ptr() not in weights:
            seen.add(tensor.untyped_storage().data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(input_ids=input_ids).logits
    logits.sum().backward()
    return len(seen)


def test_fused_mlp_matches_the_unfused_forward_and_gradients(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    input_ids = torch.randint(0, model.config.vocab_size, (1, 24))
    want_logits, want_grads = _loss_and_grads(model, input_ids)
    assert speed_up_lora_mlps(model) == 2  # one MLP per layer
    got_logits, got_grads = _loss_and_grads(model, input_ids)
    assert torch.allclose(got_logits, want_logits, atol=1e-5)
    assert set(got_grads) == set(want_grads) and any("mlp" in name for name in want_grads)
    for name in want_grads:
        assert torch.allclose(got_grads[name], want_grads[name], atol=1e-5, rtol=1e-4), name


def test_fused_mlp_keeps_two_intermediate_activations_per_layer_instead_of_four(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    input_ids = torch.randint(0, model.config.vocab_size, (1, 24))
    unfused = _saved_intermediate_tensors(model, input_ids)
    speed_up_lora_mlps(model)
    fused = _saved_intermediate_tensors(model, input_ids)
    assert (unfused, fused) == (4 * 2, 2 * 2)  # gate, silu(gate), up, product -> gate, up; 2 layers


def test_bf16_base_computes_in_bf16_with_fp32_adapter_gradients(tiny_model_dir, monkeypatch):
    model = _lora_model(tiny_model_dir, dtype=torch.bfloat16)
    input_ids = torch.randint(0, model.config.vocab_size, (1, 24))
    want_logits, want_grads = _loss_and_grads(model, input_ids)
    speed_up_lora_mlps(model)
    calls = []
    fused = fast_mlp.LoraMLPFunction.apply
    monkeypatch.setattr(fast_mlp.LoraMLPFunction, "apply", lambda *args: calls.append(1) or fused(*args))
    got_logits, got_grads = _loss_and_grads(model, input_ids)
    assert len(calls) == 2 and got_logits.dtype == torch.bfloat16
    assert torch.allclose(got_logits.float(), want_logits.float(), atol=0.1)
    mlp_grads = [name for name in got_grads if "mlp" in name]
    assert mlp_grads and all(got_grads[name].dtype == torch.float32 for name in mlp_grads)
    for name in mlp_grads:
        assert torch.allclose(got_grads[name], want_grads[name], atol=0.05, rtol=0.1), name


def test_dropout_disabled_adapter_and_autocast_take_the_modules_own_forward(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    calls = []
    fused = fast_mlp.LoraMLPFunction.apply
    monkeypatch.setattr(fast_mlp.LoraMLPFunction, "apply", lambda *args: calls.append(1) or fused(*args))
    input_ids = torch.randint(0, plain.config.vocab_size, (1, 12))

    with_dropout = _lora_model(tiny_model_dir, dropout=0.5)
    assert speed_up_lora_mlps(with_dropout) == 2
    with torch.no_grad():
        with_dropout.train()
        with_dropout(input_ids=input_ids)
        with with_dropout.disable_adapter():
            base = with_dropout(input_ids=input_ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with_dropout(input_ids=input_ids)
    assert calls == []
    assert torch.allclose(base, plain(input_ids=input_ids).logits, atol=1e-6)


def test_the_lora_method_uses_the_fused_mlp(tiny_model_dir):
    from tuneforge.config import make_config
    from tuneforge.model.methods import get_method

    model = _lora_model(tiny_model_dir)
    get_method("lora").speed_up(model, make_config({"data": "x.jsonl"}))
    mlps = [m for m in model.modules() if type(m).__name__ == "LlamaMLP"]
    assert mlps and all("forward" in vars(m) and hasattr(m, "_unfused_forward") for m in mlps)


def test_the_memory_planner_counts_the_fused_mlp(tiny_model_dir):
    """fused_mlp_count says which MLPs take the fused path; the planner then plans two intermediate copies fewer."""
    from tuneforge.model.fast_mlp import fused_mlp_count
    from tuneforge.train.memory_plan import FUSED_MLP_SAVING, ModelShape, activation_bytes_per_token

    plain, with_dropout = _lora_model(tiny_model_dir), _lora_model(tiny_model_dir, dropout=0.1)
    assert fused_mlp_count(plain) == 0  # not patched yet
    speed_up_lora_mlps(plain), speed_up_lora_mlps(with_dropout)
    assert fused_mlp_count(plain) == 2 and fused_mlp_count(with_dropout) == 0
    shape = ModelShape(parameters=1, hidden=64, intermediate=176, layers=2, vocab=100)
    unfused = activation_bytes_per_token(shape, full=False, checkpointing=False, dtype_bytes=4)
    fused = activation_bytes_per_token(shape, full=False, checkpointing=False, dtype_bytes=4, fused_mlp=True)
    assert unfused - fused == pytest.approx(FUSED_MLP_SAVING * 4 * 176 * 2)  # fp32 intermediate-width tensors, 2 layers
    assert 1.0 <= FUSED_MLP_SAVING <= 2.0  # never more than the two tensors it no longer saves
