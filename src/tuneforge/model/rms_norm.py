"""RMSNorm as one autograd function that keeps only its input and one number per token.

transformers' ``LlamaRMSNorm`` (and the same module of Mistral, Qwen2, Qwen3) computes
``weight * (x·rsqrt(mean(x²) + eps)).to(x.dtype)`` in fp32 with four tracked operations, so
autograd keeps about four full-width copies of the activations per norm, most of them fp32 — the
largest block of saved activations in a bf16 LoRA run (about 10 KB per token per layer for
SmolLM2). ``RMSNormFunction`` gives the same forward result and gradients but saves only ``x`` and
the per-token ``rsqrt``, and recomputes the normalised values in the backward pass (cheap next to a
matrix multiply). ``tests/test_rms_norm.py`` checks it against transformers' module. Its output
is offered as a saved-tensor recipe (model/saved_recipes.py): the layers that consume it (q/k/v,
the MLP) then keep no copy of it either.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn as nn

from tuneforge.model import saved_recipes

# transformers norm classes whose forward is exactly weight * normalise(x).to(x.dtype).
PLAIN_RMS_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})


class RMSNormFunction(torch.autograd.Function):
    """y = weight · (x / sqrt(mean(x²) + eps)) with the statistics in fp32, as transformers does."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        wide = x.float()
        rstd = torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)
        out = normalise(x, weight, rstd, wide)
        ctx.save_for_backward(x, weight, rstd)
        if x.requires_grad or weight.requires_grad:  # this node keeps x, weight, rstd: the output's consumers need not keep it
            saved_recipes.offer("rms_norm", out, normalise, x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, rstd = ctx.saved_tensors
        normalised = x.float() * rstd
        grad_weight = None
        if ctx.needs_input_grad[1]:
            dims = tuple(range(grad_out.dim() - 1))
            grad_weight = (grad_out * normalised.to(x.dtype)).sum(dims).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_normalised = (grad_out * weight).to(x.dtype).float()
            mean = (grad_normalised * normalised).mean(-1, keepdim=True)
            grad_x = ((grad_normalised - normalised * mean) * rstd).to(x.dtype)
        return grad_x, grad_weight, None


def normalise(x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, wide: torch.Tensor | None = None) -> torch.Tensor:
    """The norm's output from its input and per-token ``rstd`` (``wide``: ``x.float()`` when already made).

    The forward's own ops, so that a rebuild for the backward pass (model/saved_recipes.py) is bitwise the same.
    """
    normed = ((x.float() if wide is None else wide) * rstd).to(x.dtype)
    # In place when the dtypes agree (one full-width tensor fewer to allocate); a product is the same either way round.
    return normed.mul_(weight) if weight.dtype == normed.dtype and weight.device == normed.device else weight * normed


def _fused_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)


def speed_up_rms_norms(model: nn.Module) -> int:
    """Give every plain transformers RMSNorm in ``model`` the fused forward; return how many changed."""
    changed = 0
    for module in model.modules():
        if type(module).__name__ in PLAIN_RMS_NORMS and hasattr(module, "variance_epsilon") and "forward" not in vars(module):
            module.forward = types.MethodType(_fused_forward, module)
            changed += 1
    return changed
