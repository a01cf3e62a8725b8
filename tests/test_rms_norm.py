"""The fused RMSNorm gives transformers' outputs and gradients and keeps far fewer activations."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tuneforge.model.rms_norm import speed_up_rms_norms


def _norm(dtype: torch.dtype) -> LlamaRMSNorm:
    torch.manual_seed(0)
    norm = LlamaRMSNorm(48, eps=1e-5).to(dtype)
    norm.weight.data.uniform_(0.5, 1.5)
    return norm


def _forward_backward(norm: LlamaRMSNorm, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    norm.zero_grad()
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = norm(x)
    out.backward(grad)
    return out.detach(), x.grad, norm.weight.grad.clone(), sum(saved)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_fused_norm_matches_transformers(dtype, tolerance):
    norm = _norm(dtype)
    x = torch.randn(2, 10, 48).to(dtype) * 3
    grad = torch.randn(2, 10, 48).to(dtype)
    want_out, want_x, want_w, want_saved = _forward_backward(norm, x, grad)
    assert speed_up_rms_norms(norm) == 1
    got_out, got_x, got_w, got_saved = _forward_backward(norm, x, grad)
    assert got_out.dtype == want_out.dtype and got_x.dtype == want_x.dtype
    assert torch.allclose(got_out.float(), want_out.float(), atol=tolerance, rtol=tolerance)
    assert torch.allclose(got_x.float(), want_x.float(), atol=tolerance, rtol=tolerance)
    assert torch.allclose(got_w.float(), want_w.float(), atol=tolerance * 10, rtol=tolerance)
    # Only the input and one rsqrt per token (plus the weight), against several full-width copies.
    assert got_saved < want_saved / 2


def test_every_norm_of_a_model_is_replaced_once(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    layers = model.config.num_hidden_layers
    assert speed_up_rms_norms(model) == 2 * layers + 1  # two per block and the final norm
    assert speed_up_rms_norms(model) == 0
