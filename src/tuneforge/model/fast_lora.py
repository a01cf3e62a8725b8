"""A faster forward for PEFT's LoRA linear layers, same parameters, same saved adapter.

PEFT computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling``: the scaling multiplies and the
sum adds two full activation tensors (tokens × out_features) per layer, and the backward pass adds
the input gradients of the two branches in one more pass. Here one autograd function does the
minimum: the scaling goes on the small ``B`` matrix (out × r), both sums are folded into matrix
multiplies (``addmm``), and only ``x`` and the r-wide ``x·Aᵀ`` are kept for the backward pass. On
a CPU that saves memory-bound passes over the activations. Only the plain case is taken (one
active adapter, no dropout, not merged, frozen base weight, no DoRA or other variant); anything
else falls through to PEFT's own forward. ``tests/test_fast_lora.py`` checks outputs and gradients
against PEFT.

Mixed precision: when the frozen base weight is bf16 (``precision: bf16`` stores it so) and the
adapter is kept in fp32 (PEFT does, for exact optimizer updates), the whole layer computes in the
input's dtype, bf16: ``A`` and ``B`` are cast down for the multiplies and their gradients come back
in fp32. PEFT would run the adapter branch in fp32 and cast activations back and forth; bf16
matrix multiplies with fp32 accumulation are what AMX/tensor cores make fast.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


def _fast_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    adapters = self.active_adapters
    # Under autocast PEFT's plain modules let autocast pick each matmul's dtype; keep to that path.
    if args or kwargs or self.disable_adapters or self.merged or len(adapters) != 1 or torch.is_autocast_enabled(x.device.type):
        return self._peft_forward(x, *args, **kwargs)
    name = adapters[0]
    if name not in self.lora_A or name in self.lora_variant or not isinstance(self.lora_dropout[name], nn.Identity):
        return self._peft_forward(x, *args, **kwargs)
    base = self.base_layer
    if not isinstance(base, nn.Linear) or base.weight.requires_grad or x.dtype != base.weight.dtype:
        return self._peft_forward(x, *args, **kwargs)
    flat = x.reshape(-1, x.shape[-1])
    out = LoraLinearFunction.apply(flat, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, float(self.scaling[name]))
    return out.view(*x.shape[:-1], out.shape[-1])


class LoraLinearFunction(torch.autograd.Function):
    """y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ with W (and b) frozen; gradients for x, A and B.

    Computes in ``x``'s dtype (which must be ``W``'s); ``A`` and ``B`` may be wider (fp32 masters)
    and get their gradients in their own dtype.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
        ctx.master_dtype = lora_a.dtype
        lora_a, lora_b = lora_a.to(x.dtype), lora_b.to(x.dtype)  # no copy when the dtypes agree
        out, hidden = lora_linear(x, weight, bias, lora_a, lora_b, scaling)
        ctx.save_for_backward(x, weight, lora_a, lora_b, hidden)
        ctx.scaling = scaling
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, lora_a, lora_b, hidden = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x, grad_a, grad_b = lora_linear_backward(grad_out, x, weight, lora_a, lora_b, hidden, ctx.scaling,
                                                      ctx.master_dtype, needs[0], needs[3], needs[4])
        return grad_x, None, None, grad_a, grad_b, None


def lora_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_a: torch.Tensor,
                lora_b: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ`` and the r-wide ``x·Aᵀ`` (kept for B's gradient); A and B in ``x``'s dtype."""
    hidden = x @ lora_a.t()  # tokens × r
    return torch.addmm(F.linear(x, weight, bias), hidden, lora_b.t(), alpha=scaling), hidden


def lora_linear_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor,
                         lora_b: torch.Tensor, hidden: torch.Tensor, scaling: float, master: torch.dtype,
                         want_x: bool = True, want_a: bool = True, want_b: bool = True
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``lora_linear`` for ``x``, ``A`` and ``B`` (A and B in their master dtype); None where not wanted."""
    grad_hidden = (grad_out @ lora_b) * scaling  # tokens × r, small
    grad_b = ((grad_out.t() @ hidden) * scaling).to(master) if want_b else None
    grad_a = (grad_hidden.t() @ x).to(master) if want_a else None
    grad_x = torch.addmm(grad_hidden @ lora_a, grad_out, weight) if want_x else None
    return grad_x, grad_a, grad_b


def speed_up_lora(model: nn.Module) -> int:
    """Give every PEFT LoRA ``Linear`` of ``model`` the fused forward; return how many were changed.

    Layers with a LoRA variant (DoRA's weight decomposition: ``lora_variant``) keep PEFT's own
    forward: the fused function computes plain LoRA only. (An adapter with a variant added later is
    still caught per call in ``_fast_forward``.) Quantized layers (QLoRA's ``Linear4bit``) are other
    PEFT classes and are not touched either.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    changed = 0
    for module in model.modules():
        if type(module) is LoraLinear and not getattr(module, "lora_variant", None) and not hasattr(module, "_peft_forward"):
            module._peft_forward = module.forward
            module.forward = types.MethodType(_fast_forward, module)
            changed += 1
    return changed
