"""``qlora``: LoRA adapters trained on a base whose linear layers are stored in 4 bits (bitsandbytes NF4).

The base loads as usual, then every ``nn.Linear`` of the decoder (not the output head, which is
often tied to the embeddings) is replaced by a ``bitsandbytes.nn.Linear4bit`` holding its weight
quantized in blocks of 64 (NF4 or FP4, optionally with double quantization of the block scales).
The 4-bit weights are frozen buffers of packed ``uint8``; PEFT's LoRA layers for ``Linear4bit``
add the adapters on top. bitsandbytes >= 0.45 runs this on a CPU as well as on a GPU (the point is
the memory: the weights are dequantized on every forward). On a CPU, ``speed_up`` swaps the 4-bit
layers' forward for a just-in-time dequantization (``JitDequantLinear``): dequantize the layer's
weight, one matmul, drop it; the backward dequantizes again instead of keeping it. Same results as
bitsandbytes' forward (bit-identical outputs in ``tests/test_methods.py``), measured within the noise
of bitsandbytes' own CPU path (BENCHMARKS.md), and only one layer's weight is held in full precision.
The settings are written next to the adapter (``quantization.json``) so reloading quantizes the
base the same way and gives the same outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tuneforge.core.errors import ConfigError
from tuneforge.core.registries import METHODS
from tuneforge.model.methods.lora import LORA_OPTIONS, LoraMethod

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig

QUANTIZATION_FILE = "quantization.json"
INSTALL = "pip install 'tuneforge[qlora]' (bitsandbytes>=0.45, which has a CPU backend)"


class QloraMethod(LoraMethod):
    name = "qlora"
    description = "LoRA on a 4-bit (NF4) quantized base"
    quantization = "bnb-4bit"
    mergeable = True  # into the full-precision base, as QLoRA adapters usually are
    options = (*LORA_OPTIONS, "qlora_quant_type", "qlora_double_quant")

    def load_base(self, model_dir: Path, device: str, config: FineTuningConfig, precision: str) -> Any:
        # The whole base converted first, then quantized. (Converting and quantizing layer by layer instead held
        # 1.7 GB rather than 4.7 GB under tcmalloc once loaded for a SmolLM2-1.7B shape, but its training step
        # peaked as high, 5.9 GB, and the memory planner, which starts from the process's size once the model
        # is ready, then planned 21 % under the peak: measured 2026-12-02, bench/results/scale-avx512bf16.)
        model = super().load_base(model_dir, device, config, precision)
        quantize_linears(model, config.qlora_quant_type, config.qlora_double_quant, self.base_dtype(precision))
        return model

    def speed_up(self, model: Any, config: FineTuningConfig) -> None:
        super().speed_up(model, config)
        dequantize_just_in_time(model)

    def save(self, model: Any, out_dir: Path) -> None:
        super().save(model, out_dir)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        settings = getattr(base, "tuneforge_quantization", None)
        if settings:
            (Path(out_dir) / QUANTIZATION_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    def load_saved(self, weights_dir: Path, load_base: Callable[[], Any], device: str) -> Any:
        import torch

        from tuneforge.model.adapters import load_adapter

        settings = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
        file = weights_dir / QUANTIZATION_FILE
        if file.is_file():
            settings |= json.loads(file.read_text())
        base = load_base()
        quantize_linears(base, settings["quant_type"], bool(settings["double_quant"]), getattr(torch, settings["compute_dtype"]))
        return load_adapter(base, weights_dir)

    def describe_saved(self, weights_dir: Path, base_name: str) -> str:
        return f"{base_name} (4-bit) + qlora adapter {weights_dir}"


def quantize_linears(model: Any, quant_type: str = "nf4", double_quant: bool = True, compute_dtype: Any = None) -> int:
    """Replace every ``nn.Linear`` of ``model`` but the output head by a 4-bit ``Linear4bit``, in place.

    Returns how many layers were quantized. The frozen weights are quantized on the model's device;
    the bias, if any, keeps its dtype. Raises ``ConfigError`` when bitsandbytes is missing.
    """
    import torch
    import torch.nn as nn

    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError([f"method: qlora needs bitsandbytes; install it with {INSTALL}"]) from None
    from tuneforge.core.memory import file_mappings, release_file_pages

    head = model.get_output_embeddings()
    compute_dtype = compute_dtype or torch.float32
    # fp32 weights point into the mapped safetensors file; once quantized, their pages are let go (else every one
    # stays resident as long as the file is mapped, for the embeddings: a SmolLM2-1.7B-shaped QLoRA step peaked at
    # 13.1 GB, above LoRA's 10.7; 6.7 GB with them let go, bench/results/scale.json).
    mappings = file_mappings()
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or child is head:
                continue
            device = child.weight.device
            # quantized from the compute dtype, as training's base is (a reload's fp32 base: a copy of this layer only)
            source = child.weight.data.to(compute_dtype).contiguous()
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=double_quant,
                                      quant_type=quant_type, device="meta")
            # On AVX512-BF16 CPUs bitsandbytes repacks a 4-bit weight in place the first time it runs without
            # gradients (evaluation): another layout and block-scale format, which the just-in-time dequantization
            # below cannot read, and which needs in_features divisible by 64. One format throughout instead.
            layer.support_avx512bf16_for_cpu = False
            layer.weight = bnb.nn.Params4bit(source, requires_grad=False,
                                             compress_statistics=double_quant, quant_type=quant_type, module=layer)
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, child_name, layer.to(device))  # moving to a device quantizes the weight
            if device.type == "cpu":
                release_file_pages(child.weight.data_ptr(), child.weight.numel() * child.weight.element_size(), mappings)
            count += 1
    model.is_loaded_in_4bit = True  # PEFT picks its Linear4bit LoRA layers by this flag
    model.tuneforge_quantization = {"quant_type": quant_type, "double_quant": double_quant,
                                    "compute_dtype": str(compute_dtype).removeprefix("torch.")}
    return count


def _jit_forward(self: Any, x: Any) -> Any:
    import torch

    weight = self.weight
    if x.device.type != "cpu" or getattr(weight, "quant_state", None) is None or torch.is_autocast_enabled("cpu"):
        return self._bnb_forward(x)
    out = JitDequantLinear.apply(x, weight, weight.quant_state)
    return out + self.bias.to(out.dtype) if self.bias is not None else out


def dequantize_just_in_time(model: Any) -> int:
    """Give every CPU ``Linear4bit`` of ``model`` the just-in-time dequantizing forward; return how many."""
    import types

    import bitsandbytes as bnb

    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and not hasattr(module, "_bnb_forward") and module.weight.device.type == "cpu":
            module._bnb_forward = module.forward
            module.forward = types.MethodType(_jit_forward, module)
            changed += 1
    return changed


def _jit_function() -> Any:
    import torch
    from bitsandbytes.functional import dequantize_4bit

    class JitDequant(torch.autograd.Function):
        """y = x·Wᵀ with W stored 4-bit: dequantized for the matmul and again for the input gradient."""

        @staticmethod
        def forward(ctx: Any, x: Any, packed: Any, state: Any) -> Any:
            ctx.packed, ctx.state = packed, state
            return x @ dequantize_4bit(packed, state).to(x.dtype).t()

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return grad @ dequantize_4bit(ctx.packed, ctx.state).to(grad.dtype), None, None

    return JitDequant


class _Lazy:
    """The autograd function, built on first use (importing torch and bitsandbytes only then)."""

    _function: Any = None

    def apply(self, *args: Any) -> Any:
        if _Lazy._function is None:
            _Lazy._function = _jit_function()
        return _Lazy._function.apply(*args)


JitDequantLinear = _Lazy()

QLORA = METHODS.register("qlora", QloraMethod())
