"""The fused LoRA forward gives PEFT's outputs and gradients, and falls back to PEFT where it must."""

from __future__ import annotations

import torch

from tuneforge.model.adapters import apply_lora
from tuneforge.model import fast_lora
from tuneforge.model.fast_lora import speed_up_lora


def _lora_model(tiny_model_dir, dropout: float = 0.0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), 4, 8, dropout, "all-linear")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter path count
            parameter.data.normal_(0, 0.1)
    return model


def _loss_and_grads(model, input_ids):
    model.zero_grad()
    logits = model(input_ids=input_ids).logits
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], input_ids[0, 1:])
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fused_forward_matches_peft(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    input_ids = torch.randint(0, model.config.vocab_size, (1, 24))
    want_logits, want_grads = _loss_and_grads(model, input_ids)
    assert speed_up_lora(model) == 2 * 7  # 2 layers × 7 linear modules
    got_logits, got_grads = _loss_and_grads(model, input_ids)
    assert torch.allclose(got_logits, want_logits, atol=1e-5)
    assert set(got_grads) == set(want_grads) and want_grads
    for name in want_grads:
        assert torch.allclose(got_grads[name], want_grads[name], atol=1e-5), name


def test_disabled_adapter_and_dropout_fall_back_to_peft(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model = _lora_model(tiny_model_dir, dropout=0.5)
    speed_up_lora(model)
    input_ids = torch.randint(0, model.config.vocab_size, (1, 12))
    with torch.no_grad():
        want = plain(input_ids=input_ids).logits
        with model.disable_adapter():
            base = model(input_ids=input_ids).logits
        model.train()  # dropout active: PEFT's own path, so two passes differ
        first, second = model(input_ids=input_ids).logits, model(input_ids=input_ids).logits
    assert torch.allclose(base, want, atol=1e-6)
    assert not torch.allclose(first, second)


def test_bf16_base_with_fp32_adapters_computes_in_bf16_and_keeps_fp32_gradients(tiny_model_dir, monkeypatch):
    """precision bf16 for LoRA: frozen base stored in bf16, adapters fp32; fused path close to PEFT's."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model = apply_lora(base, 4, 8, 0.0, "all-linear")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.1)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    input_ids = torch.randint(0, model.config.vocab_size, (1, 24))
    want_logits, want_grads = _loss_and_grads(model, input_ids)  # PEFT: adapter branch in fp32
    speed_up_lora(model)
    calls = []
    fused = fast_lora.LoraLinearFunction.apply
    monkeypatch.setattr(fast_lora.LoraLinearFunction, "apply", lambda *args: calls.append(1) or fused(*args))
    got_logits, got_grads = _loss_and_grads(model, input_ids)  # fused: everything in bf16
    assert len(calls) == 2 * 7
    assert got_logits.dtype == torch.bfloat16
    assert torch.allclose(got_logits.float(), want_logits.float(), atol=0.1)
    assert set(got_grads) == set(want_grads)
    for name, want in want_grads.items():
        got = got_grads[name]
        assert got.dtype == torch.float32, name
        # bf16 keeps ~3 significant digits: compare directions, not digits.
        cosine = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))
