"""The gated MLP of a LoRA model as one autograd function that recomputes its cheap parts.

A Llama-family MLP computes ``down(silu(gate(x)) * up(x))``. Under autograd that keeps four
intermediate-width tensors per token for the backward pass: ``gate(x)`` (for SiLU), ``silu(gate(x))``
and ``up(x)`` (for the product) and the product itself (the input of ``down``, which its LoRA ``A``
gradient needs). Those four are the largest block of a LoRA step's saved activations (about 55 % for
SmolLM2: ``bench/results/scale.md``). ``LoraMLPFunction`` keeps only ``gate(x)`` and ``up(x)`` and
recomputes SiLU and the product in the backward pass: two elementwise passes, no matrix multiply
again, so half of that block is no longer held while the rest of the model runs.

It takes the plain case only — each of the three projections a PEFT LoRA ``Linear`` that
``fast_lora`` would take (one active adapter, no dropout, frozen base weight without bias, no variant),
a SiLU activation, no autocast — and otherwise calls the module's own forward. Forward values and
gradients equal the unfused path's up to float rounding (``tests/test_fast_mlp.py``).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from tuneforge.model.fast_lora import lora_linear, lora_linear_backward

# transformers MLP classes whose forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x)).
GATED_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})
# Activation modules that compute F.silu (transformers' ACT2FN["silu"] is its own SiLUActivation class).
SILU_ACTIVATIONS = frozenset({"SiLU", "SiLUActivation"})


def _plain_lora(layer: Any, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """``(A, B, scaling)`` of a LoRA linear layer the fused function can compute on ``dtype`` inputs, else None."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(layer) is not LoraLinear or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant or not isinstance(layer.lora_dropout[name], nn.Identity):
        return None
    base = layer.base_layer
    if not isinstance(base, nn.Linear) or base.bias is not None or base.weight.requires_grad or base.weight.dtype != dtype:
        return None
    return layer.lora_A[name].weight, layer.lora_B[name].weight, float(layer.scaling[name])


def _fused_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if torch.is_autocast_enabled(x.device.type) or type(self.act_fn).__name__ not in SILU_ACTIVATIONS:
        return self._unfused_forward(x)
    parts = [_plain_lora(layer, x.dtype) for layer in (self.gate_proj, self.up_proj, self.down_proj)]
    if any(part is None for part in parts):
        return self._unfused_forward(x)
    (a_gate, b_gate, s_gate), (a_up, b_up, s_up), (a_down, b_down, s_down) = parts  # type: ignore[misc]
    flat = x.reshape(-1, x.shape[-1])
    out = LoraMLPFunction.apply(flat, self.gate_proj.base_layer.weight, a_gate, b_gate, self.up_proj.base_layer.weight,
                                a_up, b_up, self.down_proj.base_layer.weight, a_down, b_down, (s_gate, s_up, s_down))
    return out.view(*x.shape[:-1], out.shape[-1])


class LoraMLPFunction(torch.autograd.Function):
    """y = down(silu(gate(x)) · up(x)), each projection a frozen weight plus a LoRA; gradients for x and the adapters.

    Computes in ``x``'s dtype (the base weights'); the adapter matrices may be wider fp32 masters and
    get their gradients in their own dtype. Saved: ``x``, ``gate(x)``, ``up(x)`` and the r-wide
    adapter intermediates; SiLU and the product are recomputed in the backward pass.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w_gate: torch.Tensor, a_gate: torch.Tensor, b_gate: torch.Tensor,
                w_up: torch.Tensor, a_up: torch.Tensor, b_up: torch.Tensor, w_down: torch.Tensor, a_down: torch.Tensor,
                b_down: torch.Tensor, scalings: tuple[float, float, float]) -> torch.Tensor:
        ctx.master_dtype = a_gate.dtype
        adapters = [m.to(x.dtype) for m in (a_gate, b_gate, a_up, b_up, a_down, b_down)]  # no copy when dtypes agree
        gate, h_gate = lora_linear(x, w_gate, None, adapters[0], adapters[1], scalings[0])
        up, h_up = lora_linear(x, w_up, None, adapters[2], adapters[3], scalings[1])
        product = F.silu(gate).mul_(up)
        out, h_down = lora_linear(product, w_down, None, adapters[4], adapters[5], scalings[2])
        ctx.save_for_backward(x, w_gate, w_up, w_down, gate, up, h_gate, h_up, h_down, *adapters)
        ctx.scalings = scalings
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_gate, w_up, w_down, gate, up, h_gate, h_up, h_down, a_gate, b_gate, a_up, b_up, a_down, b_down = ctx.saved_tensors
        s_gate, s_up, s_down = ctx.scalings
        master = ctx.master_dtype
        sigmoid = torch.sigmoid(gate)
        silu = gate * sigmoid
        product = silu * up  # recomputed: the input of down, for its A gradient
        grad_product, grad_a_down, grad_b_down = lora_linear_backward(grad_out, product, w_down, a_down, b_down, h_down,
                                                                       s_down, master)
        del product
        grad_up = grad_product * silu
        # d silu(g)/dg = sigmoid(g) · (1 + g · (1 - sigmoid(g)))
        grad_gate = grad_product.mul_(up).mul_(sigmoid.mul_(gate.mul(1 - sigmoid).add_(1)))
        del silu, sigmoid
        grad_x_gate, grad_a_gate, grad_b_gate = lora_linear_backward(grad_gate, x, w_gate, a_gate, b_gate, h_gate, s_gate, master)
        grad_x_up, grad_a_up, grad_b_up = lora_linear_backward(grad_up, x, w_up, a_up, b_up, h_up, s_up, master)
        grad_x = grad_x_gate.add_(grad_x_up) if ctx.needs_input_grad[0] else None
        return (grad_x, None, grad_a_gate, grad_b_gate, None, grad_a_up, grad_b_up, None, grad_a_down, grad_b_down, None)


def fused_mlp_count(model: nn.Module) -> int:
    """How many MLPs of ``model`` take the fused path (their three projections plain LoRA layers, SiLU) in its dtype."""
    count = 0
    for module in model.modules():
        if "_unfused_forward" not in vars(module) or type(module.act_fn).__name__ not in SILU_ACTIVATIONS:
            continue
        layers = (module.gate_proj, module.up_proj, module.down_proj)
        weights = [getattr(getattr(layer, "base_layer", None), "weight", None) for layer in layers]
        if all(w is not None for w in weights) and all(
                _plain_lora(layer, w.dtype) is not None for layer, w in zip(layers, weights)):
            count += 1
    return count


def speed_up_lora_mlps(model: nn.Module) -> int:
    """Give every gated transformers MLP of ``model`` the fused LoRA forward; return how many were changed.

    The check that all three projections are plain LoRA layers is made per call, so an MLP whose
    layers another adapter or a variant changes later falls back to its own forward.
    """
    changed = 0
    for module in model.modules():
        if type(module).__name__ in GATED_MLPS and "forward" not in vars(module) and all(
                hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            module._unfused_forward = module.forward
            module.forward = types.MethodType(_fused_forward, module)
            changed += 1
    return changed
