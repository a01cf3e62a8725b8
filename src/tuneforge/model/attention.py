"""Attention over packed sequences without cross-talk and without a tokens × tokens mask.

A packed batch is one row holding several examples back to back, with ``cu_seq_lens`` marking
where each starts. ``packed_attention`` runs causal scaled-dot-product attention on each example's
slice separately, so no token attends across examples and the work is Σ lᵢ² rather than (Σ lᵢ)².
Without ``cu_seq_lens`` (evaluation, generation) it is transformers' own SDPA attention.

The examples are cut with one ``split`` (its backward is one concatenation) rather than a slice
each (each slice's backward fills a zero tensor of the whole row). On a CPU, bf16 inputs are
attended in fp32: PyTorch's CPU flash-attention backward is about twice as slow in bf16 as in fp32
(measured on this project's bench: 2.4 s vs 1.1 s for 30 layers of an 8-example batch). In training
its fp32 backward is replaced by ``_CpuBf16Attention``'s: the probabilities recomputed from the
forward's log-sum-exp (the scores in fp32), the four products with them in bf16, as flash attention
does on a GPU. On an AVX512-BF16 CPU (SmolLM2-135M's heads, 150 tokens) an example's forward and
backward take 1.17 ms a layer instead of 1.47 ms, gradients within bf16 rounding (0.4 %) of the fp32
kernel's; it keeps the bf16 q, k, v for the backward instead of fp32 copies.

The joined output (o_proj's input, a copy) is offered as a saved-tensor recipe
(model/saved_recipes.py): o_proj keeps the pieces SDPA keeps anyway instead of a second copy.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.model import saved_recipes

PACKED_ATTENTION = "tuneforge_packed"
# The bf16 backward holds one example's scores whole (heads × L² floats, twice, for a moment): up to 2²³ of them
# (32 MB; SmolLM2-1.7B's 32 heads at 512 tokens); longer examples keep the fp32 flash kernel, which works in blocks.
EXPLICIT_BACKWARD_SCORES = 2**23
_registered = False


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Per-example causal attention for packed rows; SDPA otherwise. Shapes as transformers' attention functions."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    boundaries = kwargs.get("cu_seq_lens_q")
    if boundaries is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    # Grouped-query attention without copying the key/value heads (same grouping as repeat_kv).
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    p = dropout if module.training else 0.0
    dtype = query.dtype
    cuts = boundaries.tolist()
    lengths = [end - start for start, end in zip(cuts[:-1], cuts[1:])]  # collate_packed covers the whole row
    trains = query.requires_grad or key.requires_grad or value.requires_grad
    cpu_bf16 = query.device.type == "cpu" and dtype == torch.bfloat16
    own_backward = (cpu_bf16 and p == 0.0 and trains and torch.is_grad_enabled()
                    and query.shape[1] * max(lengths) ** 2 <= EXPLICIT_BACKWARD_SCORES)
    if cpu_bf16 and not own_backward:
        query, key, value = query.float(), key.float(), value.float()
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    examples = zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2))
    pieces = [_CpuBf16Attention.apply(q, k, v, scale) if own_backward else
              F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=scaling, enable_gqa=gqa)
              for q, k, v in examples]
    out = _join(dtype, *pieces)
    # SDPA's fused kernel keeps every piece (its output) for its backward: o_proj need not keep their copy.
    if p == 0.0 and trains:
        saved_recipes.offer("attention", out, functools.partial(_join, dtype), *pieces)
    return out, None


class _CpuBf16Attention(torch.autograd.Function):
    """Causal attention of one example, bf16 q (1, heads, L, d) and k, v (1, kv_heads, L, d), output fp32.

    Forward: PyTorch's CPU flash kernel on fp32 copies (the output and log-sum-exp exactly as SDPA's).
    Backward (flash attention's, per group of query heads sharing a key/value head): P = exp(q·kᵀ·scale − lse)
    with the scores in fp32; dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − rowsum(P∘dP))·scale, dQ = dS·K, dK = dSᵀ·Q,
    the products of P, dO and dS in bf16 (bf16 matrix instructions, fp32 sums). Saves the bf16
    inputs, the output (which o_proj's saved-tensor recipe reads) and the log-sum-exp.
    """

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        groups = query.shape[1] // key.shape[1]
        keys, values = key.float(), value.float()
        if groups > 1:  # the CPU flash kernel wants one key/value head per query head
            keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query.float(), keys, values, 0.0, True, scale=scale)
        ctx.scale = scale
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        query, key, value, out, lse = ctx.saved_tensors
        _, heads, length, dim = query.shape
        kv_heads = key.shape[1]
        rows = heads // kv_heads * length  # the query rows of one key/value head's group
        q = query[0].reshape(kv_heads, rows, dim)
        k, v = key[0], value[0]
        scores = torch.bmm(q.float(), k.float().transpose(1, 2))  # fp32: P must match the forward's lse
        probs = torch.exp_(scores.mul_(ctx.scale).sub_(lse[0].reshape(kv_heads, rows, 1)))
        probs = probs.view(kv_heads, -1, length, length).masked_fill_(_future(length), 0.0).view(kv_heads, rows, length)
        grad_o = grad_out[0].reshape(kv_heads, rows, dim)
        grad_v = torch.bmm(probs.to(torch.bfloat16).transpose(1, 2), grad_o.to(torch.bfloat16))
        grad_p = torch.bmm(grad_o.to(torch.bfloat16), v.transpose(1, 2)).float()
        # rowsum(P∘dP) (= rowsum(dO∘O) in exact arithmetic) from the same rounded dP, so each row of dS sums to zero
        grad_p.sub_((probs * grad_p).sum(-1, keepdim=True))
        grad_s = probs.mul_(grad_p).mul_(ctx.scale).to(torch.bfloat16)
        grad_q = torch.bmm(grad_s, k).view(query.shape)
        grad_k = torch.bmm(grad_s.transpose(1, 2), q)
        return grad_q, grad_k.view(key.shape), grad_v.view(value.shape), None


_FUTURE = torch.ones(0, 0, dtype=torch.bool)


def _future(length: int) -> torch.Tensor:
    """The causal mask's hidden part, True where a key comes after the query: the top-left corner of one mask
    grown to the longest example so far (a corner of an upper triangle is the smaller one)."""
    global _FUTURE
    if _FUTURE.shape[0] < length:
        _FUTURE = torch.ones(length, length, dtype=torch.bool).triu_(1)
    return _FUTURE[:length, :length]


def _join(dtype: torch.dtype, *pieces: torch.Tensor) -> torch.Tensor:
    """The examples' attention outputs as one row, (1, tokens, heads, head_dim), contiguous: o_proj's input.

    One copy: each piece (1, heads, length, head_dim) is transposed as a view (SDPA's CPU kernel lays
    it out token-major already) and the concatenation writes the contiguous row. (``.to(memory_format=)``
    is no copy when the dtype already matches, so a transposed view would reach transformers' reshape,
    which copies: o_proj's input would then be a tensor no recipe knows.)
    """
    return torch.cat([piece.transpose(1, 2) for piece in pieces], dim=1).to(dtype)


def use_packed_attention(model: Any) -> None:
    """Switch ``model`` (or the model inside a PEFT wrapper) to ``packed_attention``."""
    global _registered
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if not _registered:
        AttentionInterface.register(PACKED_ATTENTION, packed_attention)
        # Masks are still built as for SDPA, so left-padded generation keeps working.
        AttentionMaskInterface.register(PACKED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS.get("sdpa", sdpa_mask))
        _registered = True
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(PACKED_ATTENTION)
