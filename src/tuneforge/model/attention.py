"""Attention over packed sequences without cross-talk and without a tokens × tokens mask.

A packed batch is one row holding several examples back to back, with ``cu_seq_lens`` marking
where each starts. ``packed_attention`` runs causal scaled-dot-product attention on each example's
slice separately, so no token attends across examples and the work is Σ lᵢ² rather than (Σ lᵢ)².
Without ``cu_seq_lens`` (evaluation, generation) it is transformers' own SDPA attention.

The examples are cut with one ``split`` (its backward is one concatenation) rather than a slice
each (each slice's backward fills a zero tensor of the whole row). On a CPU, bf16 inputs are
attended in fp32: PyTorch's CPU flash-attention backward is about twice as slow in bf16 as in fp32
(measured on this project's bench: 2.4 s vs 1.1 s for 30 layers of an 8-example batch).

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
    if query.device.type == "cpu" and dtype == torch.bfloat16:
        query, key, value = query.float(), key.float(), value.float()
    cuts = boundaries.tolist()
    lengths = [end - start for start, end in zip(cuts[:-1], cuts[1:])]  # collate_packed covers the whole row
    pieces = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=scaling, enable_gqa=gqa)
        for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2))
    ]
    out = _join(dtype, *pieces)
    # SDPA's fused kernel keeps every piece (its output) for its backward: o_proj need not keep their copy.
    if p == 0.0 and (query.requires_grad or key.requires_grad or value.requires_grad):
        saved_recipes.offer("attention", out, functools.partial(_join, dtype), *pieces)
    return out, None


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
